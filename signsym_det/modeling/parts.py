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


def feedback_overrides(cfg, names=None):
    """Ordered ``(pattern, spec)`` pairs: user overrides first, then the four parts.

    Part patterns that match none of ``names`` (if given) are left out; user patterns are
    always kept, so that convert() warns about those that match nothing.
    """
    fb = cfg.MODEL.FEEDBACK
    pairs = []
    for entry in fb.OVERRIDES:
        pattern, rule = entry[0], entry[1]
        scale = entry[2] if len(entry) == 3 and entry[2] else fb.SCALE
        pairs.append((pattern, {"rule": rule, "scale": scale}))
    patterns = part_patterns()
    for part in PARTS:
        rule = fb[part].RULE or fb.RULE
        scale = fb[part].SCALE or fb.SCALE
        pairs.extend(
            (pattern, {"rule": rule, "scale": scale})
            for pattern in patterns[part]
            if names is None or any(fnmatchcase(n, pattern) for n in names)
        )
    return pairs


def convert_from_config(module, cfg, prefix=""):
    """Swap the convs/linears of ``module`` by ``cfg.MODEL.FEEDBACK``, in place.

    ``prefix`` is the module's own name inside the detector ("backbone." for a backbone
    built alone), so that parts and user patterns mean the same thing everywhere.
    """
    validate_feedback_config(cfg)
    fb = cfg.MODEL.FEEDBACK
    names = [name for name, _ in module.named_modules(prefix=prefix.rstrip("."))]
    return convert(
        module,
        fb.RULE,
        scale=fb.SCALE,
        overrides=feedback_overrides(cfg, names),
        include=list(fb.INCLUDE) or None,
        exclude=list(fb.EXCLUDE) or None,
        seed=fb.SEED,
        prefix=prefix,
        fixed_feedback=fb.FIXED_FEEDBACK,
    )


def part_of(name):
    """The part ("PREDICTOR", "FPN", "BACKBONE" or "HEAD") of a layer named in the detector."""
    patterns = part_patterns()
    for part in PARTS:
        if any(fnmatchcase(name, p) for p in patterns[part]):
            return part
    raise AssertionError("HEAD matches every name")  # pragma: no cover
