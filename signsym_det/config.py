"""``cfg.MODEL.FEEDBACK``: which learning rule trains which part of a detectron2 model.

Call :func:`add_feedback_config` on a fresh ``get_cfg()`` BEFORE ``merge_from_file``
(detectron2 rejects unknown keys), then :func:`validate_feedback_config` once the config
is final: it fails with the key, the bad value and the valid choices, before any model
is built or any data is read.
"""

from detectron2.config import CfgNode as CN

from .feedback import (
    AUTO,
    FIXED_FEEDBACK,
    PLAIN,
    SCALES,
    available_rules,
    check_scale,
    parse_rule,
)

#: Parts of a detector, in the order a layer is matched against them (see modeling/parts.py).
PARTS = ("PREDICTOR", "FPN", "BACKBONE", "HEAD")


def add_feedback_config(cfg):
    """Add the ``MODEL.FEEDBACK`` node and ``DATASETS.INVALID_BOXES`` to ``cfg``, in place."""
    from .data.validate import add_dataset_validation_config

    add_dataset_validation_config(cfg)
    fb = cfg.MODEL.FEEDBACK = CN()
    # Default rule and feedback scale for every converted layer. SCALE "auto": per layer,
    # "xiao" (He fan-out) where a normalisation follows the layer (a conv's GN/BN/SyncBN
    # norm), "weight_std" (std(W)) where none does (RetinaNet head, predictors, FPN
    # without FPN.NORM, P6/P7); convert()'s log and conversion_report show each layer's.
    fb.RULE = "sign_symmetry"
    fb.SCALE = AUTO
    # Per part overrides; "" inherits RULE / SCALE, RULE "none" (PLAIN) keeps the part plain.
    #   BACKBONE: the bottom-up network (ResNet body, incl. stem and shortcut convs)
    #   FPN: lateral/output convs and the P6/P7 top block
    #   HEAD: RetinaNet cls/bbox subnets, RPN conv, ROI box/mask head convs and fcs
    #   PREDICTOR: the last layers (cls_score, bbox_pred, objectness_logits,
    #              anchor_deltas, mask predictor): Xiao et al.'s "last layer"
    for part in PARTS:
        fb[part] = CN({"RULE": "", "SCALE": ""})
    # Extra per-layer rules, matched first: a list of [glob pattern, rule, scale], e.g.
    # [["head.cls_subnet.0", "bp", ""]]. Patterns match qualified module names.
    fb.OVERRIDES = []
    # Convert only layers matching INCLUDE (empty = all) and not matching EXCLUDE.
    fb.INCLUDE = []
    fb.EXCLUDE = []
    # Base seed of the fixed/random feedback tensors (identical on every process).
    fb.SEED = 0
    # fa/frsf's fixed feedback tensors: "regenerate" (redrawn from the seed once per
    # iteration, on the weight's device: no W-sized tensor per layer kept) or "store"
    # (kept in buffers: no draw per iteration, one W-sized tensor more per layer).
    fb.FIXED_FEEDBACK = "regenerate"
    # What FeedbackDetector and build_feedback_backbone wrap.
    fb.META_ARCHITECTURE = "GeneralizedRCNN"
    fb.BACKBONE_NAME = "build_resnet_fpn_backbone"
    # Log the angle between B and W every N iterations (0: never).
    fb.ALIGNMENT_PERIOD = 20
    # Also log the angle between the rule's and backprop's input gradients every N
    # iterations (0: never); costs one extra transposed conv per layer on those steps.
    fb.GRADIENT_ALIGNMENT_PERIOD = 100
    # Debug switch: before every optimizer step, stop at the first non-finite gradient and
    # name the layer, its rule and its part (reads every gradient once per iteration).
    fb.CHECK_FINITE_GRADIENTS = False


def validate_feedback_config(cfg):
    """Raise ValueError naming the key, the bad value and the valid values."""
    fb = cfg.MODEL.FEEDBACK
    valid_rules = available_rules() + [PLAIN]
    scales = "one of {} or a positive number (as a string)".format([AUTO, *SCALES])

    def rule(key, value, allow_inherit):
        if allow_inherit and value == "":
            return
        try:
            parse_rule(value)
        except ValueError:
            extra = ' or "" (inherit MODEL.FEEDBACK.RULE)' if allow_inherit else ""
            raise ValueError(
                f"cfg.{key} = {value!r} is not a learning rule; valid: {valid_rules}{extra}"
            ) from None

    def scale(key, value, allow_inherit):
        if allow_inherit and value == "":
            return
        try:
            check_scale(value)
        except ValueError:
            raise ValueError(
                f"cfg.{key} = {value!r} is not a feedback scale; valid: {scales}"
            ) from None

    rule("MODEL.FEEDBACK.RULE", fb.RULE, allow_inherit=False)
    scale("MODEL.FEEDBACK.SCALE", fb.SCALE, allow_inherit=False)
    for part in PARTS:
        rule(f"MODEL.FEEDBACK.{part}.RULE", fb[part].RULE, allow_inherit=True)
        scale(f"MODEL.FEEDBACK.{part}.SCALE", fb[part].SCALE, allow_inherit=True)
    for i, entry in enumerate(fb.OVERRIDES):
        key = f"MODEL.FEEDBACK.OVERRIDES[{i}]"
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise ValueError(
                f"cfg.{key} = {entry!r}; expected [pattern, rule] or [pattern, rule, scale]"
            )
        rule(key, entry[1], allow_inherit=False)
        if len(entry) == 3:
            scale(key, entry[2], allow_inherit=True)
    if fb.FIXED_FEEDBACK not in FIXED_FEEDBACK:
        raise ValueError(
            f"cfg.MODEL.FEEDBACK.FIXED_FEEDBACK = {fb.FIXED_FEEDBACK!r}; "
            f"valid: {list(FIXED_FEEDBACK)}"
        )
    for key in ("ALIGNMENT_PERIOD", "GRADIENT_ALIGNMENT_PERIOD"):
        if fb[key] < 0:
            raise ValueError(f"cfg.MODEL.FEEDBACK.{key} = {fb[key]!r}; expected an int >= 0")
    return cfg
