"""Name the layer, rule and part where gradients first went non-finite.

Gradients flow from the loss backwards, so among the layers whose weight gradient is not
finite, the one last in forward (module registration) order is where it started.
"""

import torch

from ..feedback import BACKPROP, FeedbackLayer
from ..modeling.parts import part_of


def first_nonfinite_layer(model):
    """(name, rule, part) of the last-registered layer with a non-finite weight grad, or None."""
    culprit = None
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        grad = getattr(weight, "grad", None)
        if isinstance(grad, torch.Tensor) and not bool(torch.isfinite(grad).all()):
            rule = module.rule if isinstance(module, FeedbackLayer) else BACKPROP
            culprit = (name, rule, part_of(name).lower())
    return culprit


def describe(model, iteration):
    """One line for an error message about a non-finite loss or gradient."""
    culprit = first_nonfinite_layer(model)
    if culprit is None:
        return f"iteration {iteration}: no weight gradient is non-finite"
    name, rule, part = culprit
    return (
        f"iteration {iteration}: gradients first went non-finite at layer {name!r} "
        f"(part {part}, rule {rule})"
    )


class NonFiniteGradientError(FloatingPointError):
    pass


def install_gradient_check(optimizer, model, iteration_fn):
    """Before every optimizer step, raise if any gradient is non-finite (a debug switch:
    it reads every gradient once per iteration)."""

    def check(opt, args, kwargs):
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    raise NonFiniteGradientError(
                        describe(model, iteration_fn())
                        + ". Lower SOLVER.BASE_LR, set SOLVER.CLIP_GRADIENTS, or give the "
                        "rule a smaller feedback scale (MODEL.FEEDBACK.*.SCALE weight_mean)."
                    )

    return optimizer.register_step_pre_hook(check)
