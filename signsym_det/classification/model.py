"""Rule-swapped torchvision ResNets for classification pretraining.

``build_classifier`` = ``torchvision.models.resnetXX(weights=None)`` (torchvision's init:
He fan-out normal convs, BN weight 1 / bias 0) followed by :func:`signsym_det.feedback.convert`
with the rule on every conv (1x1 shortcuts included) and, by default, the classifier ``fc``
left plain, i.e. exact backprop ("last layer BP", as Xiao et al.). Names stay torchvision's,
so the state dict converts to detectron2's with ``signsym_det.checkpoint``.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from ..feedback import BACKPROP, PLAIN, get_rule, parse_rule
from ..feedback import convert as convert_layers

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CLASSIFIER = "fc"


def stage_of(name: str) -> str:
    """The ResNet stage of a torchvision layer name: stem (conv1), layer1..layer4 or fc
    (the parts whose mean alignment angles pretraining logs)."""
    first = name.split(".")[0]
    return "stem" if first == "conv1" else first


def _rule_name(rule) -> str:
    return parse_rule(rule) or PLAIN


def feedback_record(
    rule: str,
    scale=None,
    *,
    classifier_rule="bp",
    classifier_scale=None,
    seed: int = 0,
    batch_manhattan: bool = False,
    classifier_batch_manhattan: bool = False,
) -> dict:
    """The ``"feedback"`` entry of a checkpoint: the rule, its options and the seed."""
    record = get_rule(rule)
    return {
        "rule": record.name,
        "scale": None if record.scale_at is None else (scale or record.default_scale),
        "classifier_rule": _rule_name(classifier_rule),
        "classifier_scale": classifier_scale,
        "seed": int(seed),
        "batch_manhattan": bool(batch_manhattan),
        "classifier_batch_manhattan": bool(classifier_batch_manhattan),
    }


def build_classifier(
    arch: str = "resnet18",
    num_classes: int = 1000,
    rule: str = "sign_symmetry",
    *,
    scale=None,
    classifier_rule="bp",
    classifier_scale=None,
    seed: int = 0,
) -> nn.Module:
    """A torchvision ResNet whose convs train by ``rule`` and whose ``fc`` by ``classifier_rule``.

    ``classifier_rule`` "bp"/"none" keeps ``fc`` a plain nn.Linear (exact backprop). Feedback
    tensors are drawn from ``seed`` (the same in every process); weights from torch's RNG.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r} is not one of {ARCHS}")
    model = getattr(models, arch)(weights=None, num_classes=num_classes)
    fc_rule = _rule_name(classifier_rule)
    if fc_rule in (PLAIN, BACKPROP):
        overrides = {CLASSIFIER: None}
    else:
        overrides = {CLASSIFIER: {"rule": fc_rule, "scale": classifier_scale}}
    return convert_layers(model, rule, scale=scale, overrides=overrides, seed=seed)
