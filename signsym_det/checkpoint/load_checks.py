"""What a checkpoint load did to a model, computed from plain dicts (no detectron2, no nn.Module).

:func:`check_load` (model state after loading, offered state, keys not loaded, layer rules)
-> :class:`LoadReport`, per the model's ResNet (found by its ``stem.conv1``):

* feedback tensors (``feedback_weight``) loaded from the file must equal the file's bit for
  bit; layers whose weights loaded but whose feedback tensors did not are ``feedback_fresh``;
* the rule recorded in the file vs the backbone's most common rule;
* backbone weights not loaded, and file tensors of the model's stages left unused (wrong
  depth or layout): a backbone mismatch; BatchNorm statistics are counted apart.

Logging and raising from a report: :mod:`.load_report`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from ..feedback import BACKPROP
from .pretrained import canonical_rule
from .torchvision_to_d2 import describe_resnet, format_resnet, stage_of

STEM_KEY = "stem.conv1.weight"
#: A backbone body is found by its first weight: a ResNet's stem, or a layered convnet's first
#: conv (signsym_det.modeling.convnet_backbone).
FIRST_KEYS = (STEM_KEY, "layers.0.0.weight")
NOT_WEIGHTS = ("num_batches_tracked", "feedback_weight", "feedback_step")
STATS = ("running_mean", "running_var")


@dataclass
class LoadReport:
    """What one load did to the model's backbone and feedback tensors."""

    path: str
    recorded_rule: str | None = None
    model_rule: str = BACKPROP
    backbone_prefix: str | None = None
    backbone_loaded: list = field(default_factory=list)
    backbone_missing: list = field(default_factory=list)
    stats_missing: list = field(default_factory=list)
    stats_unused: list = field(default_factory=list)
    unused_stage_keys: list = field(default_factory=list)
    found_resnet: str = ""  # the file's ResNet, described on a backbone mismatch
    expected_resnet: str = ""  # the model's ResNet, described on a backbone mismatch
    feedback_restored: list = field(default_factory=list)
    feedback_fresh: list = field(default_factory=list)  # weights loaded, B drawn fresh
    feedback_fresh_rules: list = field(default_factory=list)
    feedback_untouched: list = field(default_factory=list)  # neither W nor B in the file
    feedback_unused: list = field(default_factory=list)  # file B the model has no use for
    explained_keys: set = field(default_factory=set)  # missing/unused keys reported here

    @property
    def backbone_mismatch(self) -> bool:
        return bool(self.backbone_missing or self.unused_stage_keys)


def find_backbone_prefix(keys) -> str | None:
    """The name prefix of the model's ResNet or convnet body (e.g. ``backbone.bottom_up.``),
    or None."""
    prefixes = sorted(k[: -len(m)] for k in keys for m in FIRST_KEYS if k.endswith(m))
    return prefixes[0] if prefixes else None


def backbone_rule(layer_rules: dict, prefix: str | None) -> str:
    """The most common rule of the layers (module name -> rule) under ``prefix``; ties go to
    the first layer's; no layers: bp."""
    prefix = (prefix or "").rstrip(".")
    under = [
        rule
        for name, rule in layer_rules.items()
        if not prefix or name == prefix or name.startswith(prefix + ".")
    ]
    return Counter(under).most_common(1)[0][0] if under else BACKPROP


def known_rule(name) -> str:
    """Our canonical name of a recorded rule; unknown names (unregistered rules) as they are."""
    try:
        return canonical_rule(name)
    except ValueError:
        return str(name)


def check_load(
    model_state: dict,
    offered: dict,
    *,
    missing=(),
    unexpected=(),
    wrong_shape=(),
    layer_rules: dict | None = None,
    recorded_rule: str | None = None,
    path: str = "",
) -> LoadReport:
    """The report of loading ``offered`` (name -> tensor) into a model whose state is now
    ``model_state``; ``missing``/``unexpected``/``wrong_shape`` are the keys the load skipped
    (fvcore's incompatible keys), ``layer_rules`` maps conv/linear module names to their rule.

    Raises RuntimeError if a loaded feedback tensor differs from the file's.
    """
    layer_rules = layer_rules or {}
    not_loaded = set(missing) | set(wrong_shape)
    loaded = {k for k in model_state if k in offered and k not in not_loaded}
    prefix = find_backbone_prefix(model_state)
    report = LoadReport(
        path=path,
        recorded_rule=None if recorded_rule is None else known_rule(recorded_rule),
        model_rule=backbone_rule(layer_rules, prefix),
        backbone_prefix=prefix,
    )
    _check_feedback(report, model_state, offered, loaded, layer_rules)
    if prefix is not None:
        _check_backbone(report, model_state, offered, loaded, [*unexpected, *sorted(wrong_shape)])
    report.explained_keys = {
        f"{name}.feedback_weight"
        for name in report.feedback_fresh + report.feedback_untouched + report.feedback_unused
    } | {k for k in missing if k.endswith(".feedback_step")}
    return report


def _check_feedback(report, model_state, offered, loaded, layer_rules) -> None:
    for key in sorted(k for k in model_state if k.endswith(".feedback_weight")):
        layer = key[: -len(".feedback_weight")]
        if key in loaded:
            current = model_state[key]
            source = offered[key].to(device=current.device, dtype=current.dtype)
            if not torch.equal(current, source):
                raise RuntimeError(f"feedback tensor {key} differs from {report.path}'s")
            report.feedback_restored.append(layer)
        elif f"{layer}.weight" in loaded:
            report.feedback_fresh.append(layer)
        else:
            report.feedback_untouched.append(layer)
    report.feedback_fresh_rules = sorted({layer_rules.get(n, "?") for n in report.feedback_fresh})
    report.feedback_unused = sorted(
        k[: -len(".feedback_weight")]
        for k in offered
        if k.endswith(".feedback_weight") and k not in loaded
    )


def _check_backbone(report, model_state, offered, loaded, unused) -> None:
    prefix = report.backbone_prefix
    body = [k for k in model_state if k.startswith(prefix)]
    weights = [k for k in body if not k.endswith(NOT_WEIGHTS + STATS)]
    report.backbone_loaded = [k for k in weights if k in loaded]
    report.backbone_missing = [k for k in weights if k not in loaded]
    report.stats_missing = [k for k in body if k.endswith(STATS) and k not in loaded]
    stages = {stage_of(k[len(prefix) :]) for k in body} - {None}
    in_stages = [k for k in unused if stage_of(k) in stages and not k.endswith(NOT_WEIGHTS)]
    report.unused_stage_keys = [k for k in in_stages if not k.endswith(STATS)]
    report.stats_unused = [k for k in in_stages if k.endswith(STATS)]
    if report.backbone_mismatch:
        found = describe_resnet([k for k in offered if not k.endswith(NOT_WEIGHTS)])
        report.found_resnet = format_resnet(found)
        report.expected_resnet = format_resnet(describe_resnet(k[len(prefix) :] for k in body))
