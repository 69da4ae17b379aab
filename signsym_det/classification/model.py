"""Rule-swapped torchvision ResNets, and Bartunov's layered convnets, for pretraining.

``build_classifier`` = ``torchvision.models.resnetXX(weights=None)`` (torchvision's init:
He fan-out normal convs, BN weight 1 / bias 0) followed by :func:`signsym_det.feedback.convert`
with the rule on every conv (1x1 shortcuts included) and, by default, the classifier ``fc``
left plain, i.e. exact backprop ("last layer BP", as Xiao et al.). Names stay torchvision's,
so the state dict converts to detectron2's with ``signsym_det.checkpoint``.

``build_convnet`` makes the layered convnets of :class:`signsym_det.targetprop.ConvNetSpec`
(``convnet``: strided convs + a Linear output; ``convnet_lc``: the same with
LocallyConnected2d) for any algorithm: a feedback rule (as for ResNets, output layer =
classifier), DFA, or target propagation (DTP / SDTP / AO-SDTP, with inverses).
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from ..feedback import BACKPROP, PLAIN, available_rules, get_rule, parse_rule
from ..feedback import convert as convert_layers
from ..targetprop import VARIANTS, ConvNetSpec, build_dfa_classifier, build_dtp_classifier
from ..targetprop import build_classifier as build_layered

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CONVNETS = ("convnet", "convnet_lc")
ARCHS = RESNETS + CONVNETS
CLASSIFIER = "fc"
#: Algorithms that are not a feedback rule on backprop's chain: layered convnets only.
LAYERED_ALGORITHMS = ("dfa", *VARIANTS)


def algorithms() -> tuple:
    """Every ``--algorithm``: the feedback rules, then :data:`LAYERED_ALGORITHMS`."""
    return (*available_rules(), *LAYERED_ALGORITHMS)


def check_algorithm(algorithm: str, arch: str) -> str:
    """The canonical name of ``algorithm`` (rule aliases resolved) if it can train ``arch``."""
    combinations = (
        f"ResNets ({', '.join(RESNETS)}) train with a feedback rule ({', '.join(available_rules())}"
        f"); {', '.join(CONVNETS)} with those or {', '.join(LAYERED_ALGORITHMS)}"
    )
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: {combinations}")
    if algorithm in LAYERED_ALGORITHMS:
        if arch not in CONVNETS:
            raise ValueError(f"--algorithm {algorithm} cannot train --arch {arch}: {combinations}")
        return algorithm
    try:
        return get_rule(algorithm).name
    except ValueError:
        raise ValueError(f"unknown algorithm {algorithm!r}: {combinations}") from None


def stage_of(name: str) -> str:
    """The part of a layer name whose mean alignment angles pretraining logs: a ResNet's stem
    (conv1), layer1..layer4 or fc; a layered convnet's ``layers.{l}``."""
    parts = name.split(".")
    if parts[0] == "layers" and len(parts) > 1:
        return ".".join(parts[:2])
    return "stem" if parts[0] == "conv1" else parts[0]


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
    if arch not in RESNETS:
        raise ValueError(f"arch {arch!r} is not one of {RESNETS} (convnets: build_convnet)")
    model = getattr(models, arch)(weights=None, num_classes=num_classes)
    overrides = _classifier_override(CLASSIFIER, classifier_rule, classifier_scale)
    return convert_layers(model, rule, scale=scale, overrides=overrides, seed=seed)


def _classifier_override(name: str, classifier_rule, classifier_scale) -> dict:
    """``convert`` overrides giving layer ``name`` the classifier's rule (bp/none: plain)."""
    fc_rule = _rule_name(classifier_rule)
    if fc_rule in (PLAIN, BACKPROP):
        return {name: None}
    return {name: {"rule": fc_rule, "scale": classifier_scale}}


def convnet_spec(
    arch: str,
    num_classes: int,
    image_size: int,
    *,
    channels=(32, 64),
    kernel_size: int = 5,
    stride: int = 2,
    activation: str = "tanh",
    aux_outputs: int = 0,
) -> ConvNetSpec:
    """The ConvNetSpec of ``arch`` (convnet / convnet_lc) on RGB images of ``image_size``."""
    if arch not in CONVNETS:
        raise ValueError(f"arch {arch!r} is not one of {CONVNETS}")
    return ConvNetSpec(
        3,
        image_size,
        num_classes,
        tuple(channels),
        kernel_size,
        stride,
        activation,
        aux_outputs,
        locally_connected=arch == "convnet_lc",
    )


def output_layer(spec: ConvNetSpec) -> str:
    """The name of a layered convnet's output Linear (its classifier)."""
    return f"layers.{len(spec.channels)}.1"


def build_convnet(
    spec: ConvNetSpec,
    algorithm: str,
    *,
    scale=None,
    classifier_rule="bp",
    classifier_scale=None,
    seed: int = 0,
    dfa_scale=None,
) -> nn.Module:
    """``spec``'s network for ``algorithm``: a TargetPropNet (dtp, sdtp, ao_sdtp), a
    DFAClassifier (feedback B_l of ``dfa_scale`` from ``seed``) or a LayeredClassifier whose
    layers train by the rule and whose output layer by ``classifier_rule`` (as for ResNets)."""
    if algorithm in VARIANTS:
        return build_dtp_classifier(spec)
    if algorithm == "dfa":
        return build_dfa_classifier(spec, seed=seed, scale=dfa_scale)
    overrides = _classifier_override(output_layer(spec), classifier_rule, classifier_scale)
    model = build_layered(spec)
    return convert_layers(model, algorithm, scale=scale, overrides=overrides, seed=seed)
