"""convert / strip / conversion_report: put learning rules on a model's Conv2d and Linear layers.

``convert`` changes the class of each selected ``nn.Conv2d`` / ``nn.Linear`` (subclasses such
as detectron2's Conv2d included) IN PLACE to FeedbackConv2d / FeedbackLinear: the very same
object, so its Parameters, submodules (``norm``) and every outside reference to it (e.g.
detectron2's FPN keeps its convs in plain Python lists) stay valid. The original class is
remembered and ``strip`` restores it. A :class:`.LocallyConnected2d` becomes a
FeedbackLocallyConnected2d the same way (its untied filters get the rule like a conv's).

Selection, per qualified module name (fnmatch globs such as ``"*cls_score"``, ``"head.*"``):

* a layer is converted iff (``include`` is None or matches it) and ``exclude`` does not;
* ``overrides`` (ordered ``[(pattern, spec)]`` or ``{pattern: spec}``; first match wins) sets
  its rule and scale: spec is a rule name, ``None``/``"none"`` (leave it plain) or
  ``{"rule": name, "scale": scale}`` (either key may be left out: the call's value applies);
* lists and dicts may be any Sequence / Mapping, e.g. omegaconf's ListConfig / DictConfig as
  ``instantiate`` passes them from a LazyConfig;
* ``scale="auto"`` (the default) resolves per layer: ``"xiao"`` (He fan-out) where a
  normalisation follows the layer, ``"weight_std"`` where none does (:mod:`.auto_scale`);
  ``scale=None`` means each rule's own default (``"xiao"``); rules without a scale (bp)
  ignore it. ``conversion_report`` shows the scale each layer got.

``prefix`` is prepended to every name (patterns and seeds), for converting a part of a larger
model under the names it has there (e.g. ``prefix="backbone."``).

Each layer draws its random state from ``derive_seed(seed, name)``, identical in every
process. ``fixed_feedback`` (``"packed"``, ``"regenerate"`` or ``"store"``, see :mod:`.sources`)
says how fa/frsf's fixed tensor is kept: as 4-bit codes of its 16-level rounding (the default),
redrawn from that seed when needed, or in a float buffer.

Layers without a feedback version (ConvTranspose*, Conv1d/3d, deformable convs, parametrized
or uninitialised lazy layers, Conv2d/Linear subclasses with their own forward other than
detectron2's conv -> norm -> activation) are left as they are and reported.
Layers that already are feedback layers are left unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Optional

from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from .auto_scale import auto_scale, normalised_layers
from .layers import (
    FeedbackConv2d,
    FeedbackLayer,
    FeedbackLinear,
    feedback_layers,
    install_step_hook,
    remove_step_hooks,
)
from .locally_connected import FeedbackLocallyConnected2d, LocallyConnected2d
from .rules import AUTO, Scale, check_scale, derive_seed, parse_rule
from .sources import DEFAULT_FIXED_FEEDBACK, check_fixed_feedback

logger = logging.getLogger(__name__)

LayerSpec = tuple  # (canonical rule name or None for plain, scale or None for the default)
_WITHOUT_FEEDBACK_VERSION = (
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def unsupported_reason(module: nn.Module) -> Optional[str]:
    """Why a conv/linear-like ``module`` cannot be converted, or None."""
    kind = type(module).__name__
    if isinstance(module, FeedbackLayer):
        return None
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        return f"{kind} is an uninitialised lazy layer"
    if isinstance(module, _WITHOUT_FEEDBACK_VERSION) or "DeformConv" in kind:
        return f"no feedback version of {kind}"
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if parametrize.is_parametrized(module):
            return f"{kind} has a parametrized weight"
        plain_forward = type(module).forward in (nn.Conv2d.forward, nn.Linear.forward)
        detectron2_style = hasattr(module, "norm") and hasattr(module, "activation")
        if not (plain_forward or detectron2_style):
            return f"{kind} has its own forward"
    return None


def _feedback_class(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return FeedbackConv2d
    if isinstance(module, nn.Linear):
        return FeedbackLinear
    if isinstance(module, LocallyConnected2d):
        return FeedbackLocallyConnected2d
    return None


def parse_layer_spec(spec, default: LayerSpec = (None, None), where: str = "rule") -> LayerSpec:
    """(canonical rule or None, scale or None) of a rule name, None/"none" or a dict
    ``{"rule": ..., "scale": ...}`` whose missing keys come from ``default``; errors start with
    ``where``."""
    rule, scale = default
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"rule", "scale"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; valid keys: rule, scale")
        rule, scale = spec.get("rule", rule), spec.get("scale", scale)
    else:
        rule = spec
    try:
        scale = None if scale is None else check_scale(scale)
        return parse_rule(rule), scale
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _is_sequence(value) -> bool:
    """A list-like container (list, tuple, omegaconf's ListConfig), not a string."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def _parse_patterns(patterns, where: str) -> Optional[tuple]:
    if patterns is None:
        return None
    if not (isinstance(patterns, str) or _is_sequence(patterns)):
        raise ValueError(f"{where}: expected a pattern or a list of patterns, got {patterns!r}")
    patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{where}: patterns must be strings, got {pattern!r}")
    return patterns


def _parse_overrides(overrides, default: LayerSpec) -> list:
    if overrides is None:
        return []
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    parsed = []
    for item in items:
        if not (_is_sequence(item) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"overrides: expected (pattern, spec) pairs, got {item!r}")
        pattern, spec = item
        parsed.append((pattern, parse_layer_spec(spec, default, f"overrides[{pattern!r}]")))
    return parsed


def _matches(name: str, patterns, used: set) -> bool:
    """True iff a pattern matches ``name``; records the matching ones in ``used``."""
    matching = {pattern for pattern in patterns or () if fnmatchcase(name, pattern)}
    used |= matching
    return bool(matching)


def _override_for(name: str, override_list: list, used: set) -> Optional[LayerSpec]:
    for pattern, spec in override_list:
        if fnmatchcase(name, pattern):
            used.add(pattern)
            return spec
    return None


def convert(
    module: nn.Module,
    rule: Optional[str] = "sign_symmetry",
    *,
    scale: Optional[Scale] = AUTO,
    overrides=None,
    include=None,
    exclude=None,
    seed: int = 0,
    inplace: bool = True,
    prefix: str = "",
    fixed_feedback: str = DEFAULT_FIXED_FEEDBACK,
) -> nn.Module:
    """Give each selected Conv2d / Linear the rule's backward (see the module docstring)."""
    check_fixed_feedback(fixed_feedback)
    default = parse_layer_spec(rule, (None, scale), "rule")
    override_list = _parse_overrides(overrides, default)
    include = _parse_patterns(include, "include")
    exclude = _parse_patterns(exclude, "exclude")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string, got {prefix!r}")
    if not inplace:
        module = copy.deepcopy(module)

    used, unsupported, converted, auto = set(), [], Counter(), Counter()
    normalised = normalised_layers(module, prefix)
    for name, layer in module.named_modules(prefix=prefix.rstrip(".")):
        reason = unsupported_reason(layer)
        feedback_class = _feedback_class(layer)
        if reason is None and feedback_class is None:
            continue
        in_include = include is None or _matches(name, include, used)
        if _matches(name, exclude, used) or not in_include:
            continue
        if reason is not None:
            unsupported.append(f"{name or '<root>'} ({reason})")
            continue
        rule_name, layer_scale = _override_for(name, override_list, used) or default
        if rule_name is None or isinstance(layer, FeedbackLayer):
            continue
        spec_scale = layer_scale
        if layer_scale == AUTO:
            layer_scale = auto_scale(name in normalised)
        plain_class = type(layer)
        layer.__class__ = feedback_class
        layer.attach_feedback(
            rule_name, layer_scale, derive_seed(seed, name), plain_class, fixed_feedback
        )
        converted[rule_name] += 1
        if spec_scale == AUTO and layer.scale is not None:
            auto[layer.scale] += 1

    install_step_hook(module)
    patterns = (*(include or ()), *(exclude or ()), *(pattern for pattern, _ in override_list))
    unused = [pattern for pattern in dict.fromkeys(patterns) if pattern not in used]
    if unused:
        logger.warning("feedback convert: patterns matched no layer: %s", ", ".join(unused))
    if unsupported:
        logger.warning("feedback convert: left as they are: %s", "; ".join(unsupported))
    logger.info("feedback convert: converted %s", dict(converted) or "nothing")
    if auto:
        logger.info("feedback convert: scale 'auto' gave %s", dict(auto))
    return module


def strip(module: nn.Module, *, inplace: bool = True) -> nn.Module:
    """Return every feedback layer to its original class, dropping all rule state."""
    if not inplace:
        module = copy.deepcopy(module)
    remove_step_hooks(module)
    for _, layer in list(feedback_layers(module)):
        layer.detach_feedback()
    return module


@dataclass(frozen=True)
class LayerFeedback:
    """The rule on one converted layer."""

    layer_type: str
    rule: str
    scale: Optional[Scale]


@dataclass(frozen=True)
class ConversionReport:
    """What a model's Conv2d / Linear layers do in backward, derived from the model."""

    layers: dict  # qualified name -> LayerFeedback
    plain: list  # names of convertible layers left as plain backprop
    unsupported: dict  # qualified name -> reason

    @property
    def counts(self) -> dict:
        """Number of converted layers per rule."""
        return dict(Counter(entry.rule for entry in self.layers.values()))

    def __str__(self) -> str:
        rows = [("layer", "type", "rule", "scale")]
        for name, entry in self.layers.items():
            scale = "-" if entry.scale is None else str(entry.scale)
            rows.append((name or "<root>", entry.layer_type, entry.rule, scale))
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows
        ]
        counts = ", ".join(f"{rule}: {count}" for rule, count in sorted(self.counts.items()))
        lines.append(f"converted: {counts or 'none'}; plain: {len(self.plain)}")
        if self.plain:
            lines.append("plain: " + ", ".join(name or "<root>" for name in self.plain))
        for name, reason in self.unsupported.items():
            lines.append(f"unsupported: {name or '<root>'} ({reason})")
        return "\n".join(lines)


def conversion_report(module: nn.Module) -> ConversionReport:
    """Walk ``module`` and report each Conv2d / Linear: its rule, or plain, or unsupported."""
    layers, plain, unsupported = {}, [], {}
    for name, layer in module.named_modules():
        reason = unsupported_reason(layer)
        if isinstance(layer, FeedbackLayer):
            plain_type = layer._plain_class.__name__
            layers[name] = LayerFeedback(plain_type, layer.rule, layer.scale)
        elif reason is not None:
            unsupported[name] = reason
        elif _feedback_class(layer) is not None:
            plain.append(name)
    return ConversionReport(layers, plain, unsupported)
