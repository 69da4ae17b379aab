"""``cfg.MODEL.FEEDBACK``: which learning rule trains which part of a detectron2 model.

Call :func:`add_feedback_config` on a fresh ``get_cfg()`` BEFORE ``merge_from_file``
(detectron2 rejects unknown keys), then :func:`validate_feedback_config` once the config
is final: it fails with the key, the bad value and the valid choices, before any model
is built or any data is read.
"""

from collections.abc import Sequence

from detectron2.config import CfgNode as CN

from .feedback import (
    AUTO,
    DEFAULT_FIXED_FEEDBACK,
    FIXED_FEEDBACK,
    PLAIN,
    SCALES,
    available_rules,
    check_scale,
    get_rule,
    parse_rule,
)

#: SOLVER.OPTIMIZER's choices.
OPTIMIZERS = ("SGD", "AdamW")

#: Parts of a detector, in the order a layer is matched against them (see modeling/parts.py).
PARTS = ("PREDICTOR", "FPN", "BACKBONE", "HEAD")


def add_feedback_config(cfg):
    """Add the ``MODEL.FEEDBACK`` node, ``SOLVER.OPTIMIZER``, ``DATASETS.INVALID_BOXES`` and
    ``MODEL.CONVNET`` (the layered convnet backbone's settings) to ``cfg``, in place."""
    from .data.validate import add_dataset_validation_config
    from .modeling.convnet_backbone import add_convnet_config

    add_dataset_validation_config(cfg)
    add_convnet_config(cfg)
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
    # Training techniques per part (signsym_det.engine.optim builds the optimizer with them):
    #   BATCH_MANHATTAN: SGD on sign(grad) (Liao et al. 2016), after any clipping;
    #   WEIGHT_NORM_CONSTRAINT: after every step, rescale W of the part's layers whose rule is
    #     in WEIGHT_NORM_RULES to its Frobenius norm at the first step (Moskovitz et al. 2018);
    #   CLIP_GRADIENTS: clip the joint L2 norm of all the part's gradients (W, b, norms,
    #     Kolen-Pollack's B) to this value; 0: off. Runs after detectron2's global
    #     SOLVER.CLIP_GRADIENTS (per parameter) and before Batch Manhattan.
    for part in PARTS:
        fb[part] = CN(
            {
                "RULE": "",
                "SCALE": "",
                "BATCH_MANHATTAN": False,
                "WEIGHT_NORM_CONSTRAINT": False,
                "CLIP_GRADIENTS": 0.0,
            }
        )
    # The rules whose layers WEIGHT_NORM_CONSTRAINT constrains (Moskovitz et al.: fixed
    # feedback; any rule may be listed).
    fb.WEIGHT_NORM_RULES = ["fa", "frsf"]
    # Extra per-layer rules, matched first: a list of [glob pattern, rule, scale], e.g.
    # [["head.cls_subnet.0", "bp", ""]]. Patterns match qualified module names.
    fb.OVERRIDES = []
    # Convert only layers matching INCLUDE (empty = all) and not matching EXCLUDE.
    fb.INCLUDE = []
    fb.EXCLUDE = []
    # Base seed of the fixed/random feedback tensors (identical on every process).
    fb.SEED = 0
    # fa/frsf's fixed feedback tensors: "packed" (drawn from the seed once, kept as 4-bit
    # codes of their 16-level rounding: an eighth of W's float32 bytes, decoded in backward),
    # "regenerate" (redrawn from the seed once per iteration: nothing kept) or "store" (kept
    # in float buffers: one W-sized tensor more per layer).
    fb.FIXED_FEEDBACK = DEFAULT_FIXED_FEEDBACK
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
    # MODEL.WEIGHTS must fill the whole backbone (else CheckpointMismatchError). False: a file
    # that holds only part of it (e.g. a Hebbian stem from pretrain_hebbian) loads with a
    # warning naming what is missing.
    fb.CHECK_BACKBONE = True
    # detectron2's YAML config has no optimizer choice (its SGD is fixed); "AdamW" trains
    # with torch.optim.AdamW (betas 0.9, 0.999) on the same param groups, lr factors and
    # SOLVER.CLIP_GRADIENTS; SOLVER.MOMENTUM and NESTEROV then do not apply, and neither do
    # BATCH_MANHATTAN nor a part's CLIP_GRADIENTS (both SGD updates here).
    cfg.SOLVER.OPTIMIZER = "SGD"


def check_feedback_settings(rule, scale, parts, overrides, key):
    """Raise ValueError naming the setting, the bad value and the valid values.

    ``parts`` maps each of PARTS to its (rule, scale) ("" inherits ``rule`` / ``scale``);
    ``overrides`` holds [pattern, rule] or [pattern, rule, scale] entries; ``key(field, part)``
    is how the caller's config spells a setting (field "rule", "scale" or "overrides").
    """
    valid_rules = available_rules() + [PLAIN]
    scales = "one of {} or a positive number (as a string)".format([AUTO, *SCALES])

    def check_rule_value(name, value, allow_inherit):
        if allow_inherit and value == "":
            return
        try:
            parse_rule(value)
        except ValueError:
            extra = f' or "" (inherit {key("rule")})' if allow_inherit else ""
            raise ValueError(
                f"{name} = {value!r} is not a learning rule; valid: {valid_rules}{extra}"
            ) from None

    def check_scale_value(name, value, allow_inherit):
        if allow_inherit and value == "":
            return
        try:
            check_scale(value)
        except ValueError:
            message = f"{name} = {value!r} is not a feedback scale; valid: {scales}"
            raise ValueError(message) from None

    check_rule_value(key("rule"), rule, allow_inherit=False)
    check_scale_value(key("scale"), scale, allow_inherit=False)
    for part in PARTS:
        part_rule, part_scale = parts[part]
        check_rule_value(key("rule", part), part_rule, allow_inherit=True)
        check_scale_value(key("scale", part), part_scale, allow_inherit=True)
    for i, entry in enumerate(overrides):
        name = f"{key('overrides')}[{i}]"
        if isinstance(entry, str) or not isinstance(entry, Sequence) or len(entry) not in (2, 3):
            raise ValueError(
                f"{name} = {entry!r}; expected [pattern, rule] or [pattern, rule, scale]"
            )
        check_rule_value(name, entry[1], allow_inherit=False)
        if len(entry) == 3:
            check_scale_value(name, entry[2], allow_inherit=True)


def _yaml_key(field, part=None):
    return "cfg.MODEL.FEEDBACK." + (f"{part}." if part else "") + field.upper()


def validate_feedback_config(cfg):
    """Raise ValueError naming the key, the bad value and the valid values."""
    fb = cfg.MODEL.FEEDBACK
    parts = {part: (fb[part].RULE, fb[part].SCALE) for part in PARTS}
    check_feedback_settings(fb.RULE, fb.SCALE, parts, fb.OVERRIDES, _yaml_key)
    if fb.FIXED_FEEDBACK not in FIXED_FEEDBACK:
        raise ValueError(
            f"cfg.MODEL.FEEDBACK.FIXED_FEEDBACK = {fb.FIXED_FEEDBACK!r}; "
            f"valid: {list(FIXED_FEEDBACK)}"
        )
    for key in ("ALIGNMENT_PERIOD", "GRADIENT_ALIGNMENT_PERIOD"):
        if fb[key] < 0:
            raise ValueError(f"cfg.MODEL.FEEDBACK.{key} = {fb[key]!r}; expected an int >= 0")
    parts = {part: technique_settings(fb[part]) for part in PARTS}
    check_techniques(parts, fb.WEIGHT_NORM_RULES, _yaml_key)
    check_optimizer(cfg.SOLVER.OPTIMIZER, parts)
    return cfg


def check_optimizer(optimizer, parts):
    """SOLVER.OPTIMIZER is one of OPTIMIZERS, and the part techniques it is given are its own."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"cfg.SOLVER.OPTIMIZER = {optimizer!r}; valid: {list(OPTIMIZERS)}")
    if optimizer == "SGD":
        return
    for part in PARTS:
        for field in ("batch_manhattan", "clip_gradients"):
            if parts[part][field]:
                raise ValueError(
                    f"{_yaml_key(field, part)} = {parts[part][field]!r} is an SGD technique "
                    f"here, but cfg.SOLVER.OPTIMIZER = {optimizer!r}: use 'SGD', or turn it off"
                )


#: The per-part technique fields, lower case (LazyConfig spelling) -> MODEL.FEEDBACK's.
TECHNIQUES = {
    "batch_manhattan": "BATCH_MANHATTAN",
    "weight_norm_constraint": "WEIGHT_NORM_CONSTRAINT",
    "clip_gradients": "CLIP_GRADIENTS",
}


def technique_settings(part_node) -> dict:
    """{field (lower case): value} of the techniques in one part's config node."""
    return {field: part_node[key] for field, key in TECHNIQUES.items()}


def check_techniques(parts, weight_norm_rules, key):
    """Raise ValueError naming the setting, the bad value and the valid values.

    ``parts`` maps each of PARTS to its technique settings (:func:`technique_settings`);
    ``key(field, part)`` is how the caller's config spells a setting.
    """
    for part in PARTS:
        settings = parts[part]
        for field in ("batch_manhattan", "weight_norm_constraint"):
            if not isinstance(settings[field], bool):
                raise ValueError(f"{key(field, part)} = {settings[field]!r}; valid: True, False")
        clip = settings["clip_gradients"]
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0:
            raise ValueError(
                f"{key('clip_gradients', part)} = {clip!r}; expected a number >= 0 (0: off)"
            )
    if isinstance(weight_norm_rules, str) or not isinstance(weight_norm_rules, Sequence):
        raise ValueError(f"{key('weight_norm_rules')} = {weight_norm_rules!r}; expected a list")
    for rule in weight_norm_rules:
        try:
            get_rule(rule)
        except ValueError:
            raise ValueError(
                f"{key('weight_norm_rules')} holds {rule!r}, not a learning rule; "
                f"valid: {available_rules()}"
            ) from None
