"""Which learning rule trains which part of a detector: ``cfg.MODEL.FEEDBACK`` -> ``convert()``.

A layer's part is decided by its qualified name in the detector (first match wins):
PREDICTOR (``cls_score``, ``bbox_pred``, ``objectness_logits``, ``anchor_deltas``,
``predictor``), FPN (``backbone.fpn_*``, ``backbone.top_block.*``), BACKBONE
(``backbone.*``), HEAD (everything else). User ``OVERRIDES`` are matched before all of them.
"""

from fnmatch import fnmatchcase

from ..config import PARTS, validate_feedback_config
from ..feedback import convert

PREDICTOR_LAYERS = ("cls_score", "bbox_pred", "objectness_logits", "anchor_deltas", "predictor")


def part_patterns():
    """Glob patterns of each part, on module names relative to the detector."""
    return {
        "PREDICTOR": [p for n in PREDICTOR_LAYERS for p in (n, f"*.{n}")],
        "FPN": ["backbone.fpn_*", "backbone.top_block.*"],
        "BACKBONE": ["backbone.*"],
        "HEAD": ["*"],
    }


def convert_arguments(
    rule,
    scale,
    parts,
    overrides=(),
    include=(),
    exclude=(),
    seed=0,
    fixed_feedback="packed",
    names=None,
):
    """convert()'s keyword arguments for a detector, from MODEL.FEEDBACK-like settings.

    ``parts`` maps each of PARTS to its (rule, scale), "" inheriting ``rule`` / ``scale``;
    ``overrides`` are [pattern, rule] or [pattern, rule, scale] entries (scale "": ``scale``),
    matched before the parts. Part patterns that match none of ``names`` (if given) are left
    out; user patterns are always kept, so that convert() warns about those that match
    nothing. Empty ``include`` / ``exclude`` select every layer.
    """
    pairs = []
    for entry in overrides:
        pattern, entry_rule = entry[0], entry[1]
        entry_scale = entry[2] if len(entry) == 3 and entry[2] else scale
        pairs.append((pattern, {"rule": entry_rule, "scale": entry_scale}))
    patterns = part_patterns()
    for part in PARTS:
        part_rule, part_scale = parts[part]
        spec = {"rule": part_rule or rule, "scale": part_scale or scale}
        pairs.extend(
            (pattern, spec)
            for pattern in patterns[part]
            if names is None or any(fnmatchcase(n, pattern) for n in names)
        )
    return {
        "rule": rule,
        "scale": scale,
        "overrides": pairs,
        "include": list(include) or None,
        "exclude": list(exclude) or None,
        "seed": seed,
        "fixed_feedback": fixed_feedback,
    }


def convert_from_config(module, cfg, prefix=""):
    """Swap the convs/linears of ``module`` by ``cfg.MODEL.FEEDBACK``, in place.

    ``prefix`` is the module's own name inside the detector ("backbone." for a backbone
    built alone), so that parts and user patterns mean the same thing everywhere.
    """
    validate_feedback_config(cfg)
    fb = cfg.MODEL.FEEDBACK
    names = [name for name, _ in module.named_modules(prefix=prefix.rstrip("."))]
    arguments = convert_arguments(
        fb.RULE,
        fb.SCALE,
        {part: (fb[part].RULE, fb[part].SCALE) for part in PARTS},
        fb.OVERRIDES,
        fb.INCLUDE,
        fb.EXCLUDE,
        fb.SEED,
        fb.FIXED_FEEDBACK,
        names,
    )
    return convert(module, prefix=prefix, **arguments)


def part_of(name):
    """The part ("PREDICTOR", "FPN", "BACKBONE" or "HEAD") of a layer named in the detector."""
    patterns = part_patterns()
    for part in PARTS:
        if any(fnmatchcase(name, p) for p in patterns[part]):
            return part
    raise AssertionError("HEAD matches every name")  # pragma: no cover
