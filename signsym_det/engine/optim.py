"""The detection optimizer with the training techniques of ``cfg.MODEL.FEEDBACK.<PART>``.

Per part (BACKBONE, FPN, HEAD, PREDICTOR; a parameter belongs to the part of its module,
modeling/parts.py): ``BATCH_MANHATTAN`` (SGD on sign(grad)), ``CLIP_GRADIENTS`` (the joint L2
norm of the part's gradients clipped to the value) and ``WEIGHT_NORM_CONSTRAINT`` (the weights
of the part's layers whose rule is in ``MODEL.FEEDBACK.WEIGHT_NORM_RULES`` kept at their
initial Frobenius norm). detectron2's ``SOLVER.CLIP_GRADIENTS`` (per parameter, before the
per-part clipping) applies as usual, to every gradient a rule produced (Kolen-Pollack's B too).
With no technique on, the optimizer is detectron2's own SGD; ``SOLVER.OPTIMIZER "AdamW"``
gives torch's AdamW on detectron2's param groups instead (config.py).
"""

from fnmatch import fnmatchcase

import torch
from detectron2.solver import build_optimizer as detectron2_build_optimizer
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

from ..config import PARTS, technique_settings
from ..feedback.weight_norm import constrain_weight_norms
from ..modeling.parts import part_patterns
from ..optim import BatchManhattanSGD


def part_of(module_name: str) -> str:
    """The part (one of PARTS) of the module with this qualified name in the detector."""
    patterns = part_patterns()
    for part in PARTS:
        if any(fnmatchcase(module_name, p) for p in patterns[part]):
            return part
    raise AssertionError(f"{module_name!r} matches no part")  # HEAD matches everything


def parameter_parts(model) -> dict:
    """{id(parameter): part} for every parameter of ``model``."""
    return {
        id(param): part_of(name)
        for name, module in model.named_modules()
        for param in module.parameters(recurse=False)
    }


def part_groups(model, groups, parts) -> list:
    """``groups`` (torch param groups) split by part, each tagged with its part's techniques:
    ``batch_manhattan``, ``max_grad_norm`` (= clip_gradients) and ``clip_set`` (= the part).
    ``parts`` maps each of PARTS to its :func:`technique_settings`."""
    owner = parameter_parts(model)
    result = []
    for group in groups:
        for part in PARTS:
            params = [p for p in group["params"] if owner[id(p)] == part]
            if params:
                settings = parts[part]
                result.append(
                    {
                        **group,
                        "params": params,
                        "batch_manhattan": settings["batch_manhattan"],
                        "max_grad_norm": float(settings["clip_gradients"]),
                        "clip_set": part,
                    }
                )
    return result


def constrain_parts(model, optimizer, parts, rules):
    """The weight-norm constraint on the layers of the parts whose ``weight_norm_constraint``
    is on and whose rule is in ``rules`` (None if no part asks for it)."""
    chosen = {part for part in PARTS if parts[part]["weight_norm_constraint"]}
    if not chosen:
        return None
    return constrain_weight_norms(model, optimizer, rules, select=lambda n: part_of(n) in chosen)


def default_groups(cfg, model) -> list:
    """detectron2's param groups: lr and weight decay factors of biases and norms."""
    return get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )


def build_optimizer(cfg, model):
    """detectron2's SGD (param groups, lr factors, SOLVER.CLIP_GRADIENTS) with the per-part
    techniques of ``cfg.MODEL.FEEDBACK`` (module docstring)."""
    fb = cfg.MODEL.FEEDBACK
    parts = {part: technique_settings(fb[part]) for part in PARTS}
    if cfg.SOLVER.OPTIMIZER == "AdamW":
        optimizer = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            default_groups(cfg, model), lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )
    elif not any(s["batch_manhattan"] or s["clip_gradients"] for s in parts.values()):
        optimizer = detectron2_build_optimizer(cfg, model)
    else:
        optimizer = maybe_add_gradient_clipping(cfg, BatchManhattanSGD)(
            part_groups(model, default_groups(cfg, model), parts),
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    constrain_parts(model, optimizer, parts, fb.WEIGHT_NORM_RULES)
    return optimizer
