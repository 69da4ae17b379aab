"""LazyConfig (Python config) support: a model node whose layers are trained by learning rules.

In a Python config, after the model node is complete::

    from signsym_det.lazy import apply_feedback
    model = apply_feedback(model, rule="fa", parts={"predictor": {"rule": "bp"}})

and on the command line ``model.feedback.rule=sign_symmetry``,
``model.feedback.parts.fpn.scale=unit``.

The training techniques of ``cfg.MODEL.FEEDBACK.<PART>`` (Batch Manhattan, the weight-norm
constraint, per-part gradient clipping; engine/optim.py) go on the optimizer node::

    optimizer = apply_techniques(optimizer, parts={"backbone": {"batch_manhattan": True}})

and on the command line ``optimizer.techniques.parts.head.clip_gradients=1.0``,
``optimizer.techniques.weight_norm_rules=[fa]``.

The node keeps every key it had (``model.num_classes``, ``model.backbone...``), so its
relative and absolute interpolations (the head's ``${..num_classes}``) still resolve and
existing command-line overrides still apply. Only ``_target_`` changes, to
:func:`feedback_model`; the settings, mirroring ``cfg.MODEL.FEEDBACK``, and the callable the
node built before are under ``model.feedback``. Change ``model.feedback.target`` (not
``model._target_``) to build another class afterwards.
"""

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import detectron2
import torch
from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import DictConfig
from torch import nn

from .config import PARTS, TECHNIQUES, check_feedback_settings, check_techniques
from .engine.optim import constrain_parts, part_groups
from .feedback import AUTO, convert
from .feedback.weight_norm import FIXED_FEEDBACK_RULES
from .modeling.parts import convert_arguments
from .optim import BatchManhattanSGD

#: Part names in a LazyConfig (lower case) -> MODEL.FEEDBACK's.
PART_KEYS = {part.lower(): part for part in PARTS}
_PART_FIELDS = ("rule", "scale")


def _key(field, part=None):
    return "model.feedback." + (f"parts.{part.lower()}." if part else "") + field


def _target_name(target) -> str:
    """``target`` as the dotted path ``instantiate`` locates (kept as given if a string)."""
    if isinstance(target, str):
        return target
    return f"{target.__module__}.{target.__qualname__}"


def _part_fields(parts, where, valid) -> dict:
    """{PART: {field: value}} from ``{"fpn": {field: value}, ...}`` (a missing part: {}),
    checked: a dict, known part names, fields in ``valid``; ``where`` names the setting."""
    parts = {} if parts is None else parts
    if not isinstance(parts, Mapping):
        raise ValueError(f"{where} = {parts!r}; expected a dict of parts")
    unknown = sorted(set(parts) - set(PART_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown parts {unknown}; valid: {list(PART_KEYS)}")
    result = {}
    for name, part in PART_KEYS.items():
        fields = parts.get(name) or {}
        extra = sorted(set(fields) - set(valid))
        if extra:
            raise ValueError(f"{where}.{name}: unknown keys {extra}; valid: {list(valid)}")
        result[part] = dict(fields)
    return result


def _parts(parts) -> dict:
    """{PART: (rule, scale)} from ``{"fpn": {"rule": ..., "scale": ...}, ...}``; "" inherits."""
    fields = _part_fields(parts, "model.feedback.parts", _PART_FIELDS)
    return {part: (f.get("rule", ""), f.get("scale", "")) for part, f in fields.items()}


def convert_detector(
    model,
    rule="sign_symmetry",
    *,
    scale=AUTO,
    parts=None,
    overrides=(),
    include=(),
    exclude=(),
    seed=0,
    fixed_feedback="packed",
):
    """Swap the convs/linears of the detector ``model`` in place, as ``cfg.MODEL.FEEDBACK``
    would: ``parts`` ``{"backbone"|"fpn"|"head"|"predictor": {"rule": r, "scale": s}}``
    (missing or "" inherits ``rule`` / ``scale``), ``overrides`` ``[[pattern, rule(, scale)]]``
    matched first, then ``include`` / ``exclude`` globs, ``seed`` and ``fixed_feedback``."""
    part_settings = _parts(parts)
    for name, value in (("overrides", overrides), ("include", include), ("exclude", exclude)):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"model.feedback.{name} = {value!r}; expected a list")
    check_feedback_settings(rule, scale, part_settings, overrides, _key)
    names = [name for name, _ in model.named_modules()]
    arguments = convert_arguments(
        rule, scale, part_settings, overrides, include, exclude, seed, fixed_feedback, names
    )
    return convert(model, **arguments)


def feedback_model(*, feedback, **kwargs):
    """``feedback.target(**kwargs)``, converted by the other settings in ``feedback``
    (:func:`convert_detector`): the ``_target_`` :func:`apply_feedback` gives a node."""
    settings = dict(feedback)
    target = settings.pop("target")
    build = locate(target) if isinstance(target, str) else target
    if build is None:
        raise ValueError(f"model.feedback.target = {target!r} names no importable callable")
    return convert_detector(build(**kwargs), **settings)


def apply_feedback(model, **settings):
    """Make the LazyCall node ``model`` build its model rule-swapped by ``settings``, the
    keywords of :func:`convert_detector` (the module docstring says how); returns ``model``,
    edited in place.

    Applied to a node that already has feedback settings, it replaces them.
    """
    if not isinstance(model, DictConfig) or "_target_" not in model:
        raise TypeError(f"apply_feedback needs a LazyCall node (with _target_), got {model!r}")
    bound = inspect.signature(convert_detector).bind(None, **settings)
    bound.apply_defaults()
    values = {key: value for key, value in bound.arguments.items() if key != "model"}
    part_settings = _parts(values["parts"])
    target = model.feedback.target if _has_feedback(model) else model._target_
    model.feedback = {
        "target": _target_name(target),
        **values,
        "parts": {
            name: dict(zip(_PART_FIELDS, part_settings[part])) for name, part in PART_KEYS.items()
        },
        "overrides": [list(entry) for entry in values["overrides"]],
        "include": list(values["include"]),
        "exclude": list(values["exclude"]),
    }
    model._target_ = feedback_model
    return model


def _has_feedback(node) -> bool:
    target = node._target_
    return "feedback" in node and (
        target is feedback_model or target == _target_name(feedback_model)
    )


#: Every technique off (MODEL.FEEDBACK.<PART>'s defaults).
TECHNIQUES_OFF = {"batch_manhattan": False, "weight_norm_constraint": False, "clip_gradients": 0.0}


def _technique_key(field, part=None):
    return "optimizer.techniques." + (f"parts.{part.lower()}." if part else "") + field


def _technique_parts(parts) -> dict:
    """{PART: {field: value}} from ``{"backbone": {"batch_manhattan": True}, ...}``; a
    missing part or field is off."""
    fields = _part_fields(parts, "optimizer.techniques.parts", TECHNIQUES)
    return {part: {**TECHNIQUES_OFF, **f} for part, f in fields.items()}


def technique_optimizer(*, techniques, model, params, **kwargs):
    """The optimizer node's ``_target_`` after :func:`apply_techniques`: ``params`` (torch
    param groups of ``model``) split by detector part and tagged with the part's techniques,
    as ``cfg.MODEL.FEEDBACK.<PART>`` does (engine/optim.py). Batch Manhattan and clipping
    need SGD (:class:`BatchManhattanSGD`); the weight-norm constraint works with any
    ``techniques["target"]``."""
    settings = dict(techniques)
    parts = _technique_parts(settings["parts"])
    rules = list(settings["weight_norm_rules"])
    check_techniques(parts, rules, _technique_key)
    target = settings["target"]
    build = locate(target) if isinstance(target, str) else target
    if build is None:
        raise ValueError(f"optimizer.techniques.target = {target!r} names no importable callable")
    if any(p["batch_manhattan"] or p["clip_gradients"] for p in parts.values()):
        if build is not torch.optim.SGD:
            raise ValueError(
                f"optimizer.techniques.target = {target!r}: Batch Manhattan and per-part "
                "clipping are SGD updates; valid: torch.optim.SGD"
            )
        optimizer = BatchManhattanSGD(part_groups(model, list(params), parts), **kwargs)
    else:
        optimizer = build(params, **kwargs)
    constrain_parts(model, optimizer, parts, rules)
    return optimizer


def apply_techniques(optimizer, *, parts=None, weight_norm_rules=FIXED_FEEDBACK_RULES):
    """Give the LazyCall optimizer node (detectron2's ``params`` =
    ``get_default_optimizer_params`` node, whose ``model`` the trainer fills in) the
    per-part techniques ``parts`` ``{"backbone"|"fpn"|"head"|"predictor": {"batch_manhattan":
    bool, "weight_norm_constraint": bool, "clip_gradients": float}}`` (missing: off) and the
    rules the weight-norm constraint applies to; returns the node, edited in place.

    The settings go to ``optimizer.techniques``, the callable the node built before to
    ``optimizer.techniques.target``; ``optimizer.model`` follows ``optimizer.params.model``.
    """
    if not isinstance(optimizer, DictConfig) or "_target_" not in optimizer:
        raise TypeError(
            f"apply_techniques needs a LazyCall node (with _target_), got {optimizer!r}"
        )
    if "params" not in optimizer or "_target_" not in optimizer.params:
        raise ValueError(
            "apply_techniques needs the optimizer's params node (get_default_optimizer_params)"
        )
    part_settings = _technique_parts(parts)
    check_techniques(part_settings, weight_norm_rules, _technique_key)
    rules = list(weight_norm_rules)
    target = optimizer._target_
    if target is technique_optimizer or target == _target_name(technique_optimizer):
        target = optimizer.techniques.target
    optimizer.techniques = {
        "target": _target_name(target),
        "parts": {name: dict(part_settings[part]) for name, part in PART_KEYS.items()},
        "weight_norm_rules": rules,
    }
    if "model" not in optimizer.params:
        optimizer.params.model = None  # the trainer's to fill; resolvable when the config is saved
    optimizer.model = "${.params.model}"
    optimizer._target_ = technique_optimizer
    return optimizer


def detectron2_config(path, keys=None):
    """detectron2's own packaged LazyConfig ``path`` (e.g. ``"common/models/retinanet.py"``),
    or its ``keys``, as ``LazyConfig.load`` returns them: a fresh copy on every call.

    Read from the installed detectron2 directly: importing ``detectron2.model_zoo`` needs
    ``pkg_resources`` on the official build, which setuptools >= 82 no longer has.
    """
    root = Path(detectron2.__file__).parent / "model_zoo" / "configs"
    file = root / path
    if not file.is_file():
        raise FileNotFoundError(f"detectron2 ships no config {path!r} (looked in {root})")
    return LazyConfig.load(str(file), keys)


def group_norm(channels):
    """detectron2's "GN" (GroupNorm with 32 groups) as a callable norm that also builds on
    fewer channels: detectron2 v0.6's RetinaNetHead (FCOS's head) probes its norm with
    ``get_norm(norm, 1)``, and torch refuses GroupNorm(32, 1) (detectron2 main probes 32)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)
