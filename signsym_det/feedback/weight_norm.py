"""Moskovitz et al.'s weight-norm constraint: after every optimizer step, the weight W of each
chosen feedback layer is rescaled in place to its initial Frobenius norm,
``W <- W * ||W_0||_F / ||W||_F``.

W stays the layer's trainable ``nn.Parameter`` (the forward pass is untouched); the rescale
runs under no_grad in an optimizer step post-hook, so it works with any training loop. The
initial norm ``||W_0||_F`` is read just before the first step that W takes part in (after a
checkpoint was loaded: a fine-tuned model keeps its pretrained norm) and kept in the
optimizer's state of W (``optimizer.state[W]["initial_norm"]``), so it is checkpointed with
the optimizer and a resumed run continues exactly. It enters that state after the step
(optimizers such as Adam initialise a parameter's state only while it is empty).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn

from .layers import feedback_layers
from .rules import get_rule

#: The rules with a fixed feedback tensor (Moskovitz et al. constrain those layers).
FIXED_FEEDBACK_RULES = ("fa", "frsf")
#: Where the initial norm of a constrained weight is kept, in ``optimizer.state[weight]``.
STATE_KEY = "initial_norm"


class WeightNormConstraint:
    """The constrained weights of one optimizer and its hooks; :meth:`remove` detaches it."""

    def __init__(self, optimizer: torch.optim.Optimizer, weights: dict):
        self.optimizer = optimizer
        self.weights = weights  # qualified layer name -> its weight parameter
        self._pending = {}  # id(weight) -> ||W_0||_F read before the weight's first step
        self._handles = [
            optimizer.register_step_pre_hook(self._record),
            optimizer.register_step_post_hook(self._rescale),
        ]

    def initial_norms(self) -> dict:
        """{layer name: ||W_0||_F} of the weights that have taken a step so far."""
        state = self.optimizer.state
        return {
            name: float(state[w][STATE_KEY])
            for name, w in self.weights.items()
            if STATE_KEY in state.get(w, {})
        }

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    @torch.no_grad()
    def _record(self, optimizer, args, kwargs) -> None:
        for weight in self.weights.values():
            state = optimizer.state.get(weight, {})
            if STATE_KEY not in state and weight.grad is not None:
                self._pending[id(weight)] = torch.linalg.vector_norm(weight.detach().float())

    @torch.no_grad()
    def _rescale(self, optimizer, args, kwargs) -> None:
        for weight in self.weights.values():
            if id(weight) in self._pending:
                optimizer.state[weight][STATE_KEY] = self._pending.pop(id(weight))
            target = optimizer.state.get(weight, {}).get(STATE_KEY)
            if target is not None:
                norm = torch.linalg.vector_norm(weight.float())
                weight.mul_((target.to(norm.device) / norm).to(weight.dtype))


def constrain_weight_norms(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rules: Optional[Iterable[str]] = FIXED_FEEDBACK_RULES,
    select: Optional[Callable[[str], bool]] = None,
) -> WeightNormConstraint:
    """Keep the weights of ``model``'s feedback layers whose rule is in ``rules`` (names or
    aliases; None: every rule) and whose qualified name passes ``select`` (None: all) at their
    initial Frobenius norm after every step of ``optimizer``.

    Weights that do not train (``requires_grad`` False) are left out; a trainable one that
    ``optimizer`` does not hold is an error (it would never be rescaled).
    """
    wanted = None if rules is None else {get_rule(rule).name for rule in rules}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    weights = {}
    for name, layer in feedback_layers(model):
        if (wanted is None or layer.rule in wanted) and (select is None or select(name)):
            if not layer.weight.requires_grad:
                continue
            if id(layer.weight) not in held:
                raise ValueError(f"{name}.weight is trainable but not in the optimizer")
            weights[name] = layer.weight
    return WeightNormConstraint(optimizer, weights)
