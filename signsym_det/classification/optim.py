"""SGD with optional Batch Manhattan (Liao et al. 2016) per parameter group (or AdamW).

Batch Manhattan: the loss gradient of the batch is replaced by its sign before SGD's
weight decay and momentum, so a step is ``v = mu * v + sign(g) + wd * w; w -= lr * v``.
Groups: the network body and the classifier ``fc`` (own lr and Batch Manhattan flag, as in
Xiao et al.'s script). A trainable feedback tensor (Kolen-Pollack's B) sits in the group of
its layer and gets the same treatment as the layer's weight.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import CLASSIFIER


class BatchManhattanSGD(torch.optim.SGD):
    """torch.optim.SGD; groups with ``batch_manhattan=True`` step on sign(grad)."""

    def __init__(self, params, lr: float, **kwargs):
        super().__init__(params, lr=lr, **kwargs)
        for group in self.param_groups:
            group.setdefault("batch_manhattan", False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["batch_manhattan"]:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.sign_()
        super().step()
        return loss


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
    batch_manhattan: bool = False,
    classifier_batch_manhattan: bool = False,
    classifier_lr: float | None = None,
) -> torch.optim.Optimizer:
    """Two groups, body and ``fc``; ``classifier_lr`` defaults to ``lr``.

    ``"sgd"`` (the standard recipe; Batch Manhattan per group) or ``"adamw"`` (betas 0.9,
    0.999; ``momentum`` and Batch Manhattan do not apply).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r} is not one of {OPTIMIZERS}")
    if optimizer == "adamw" and (batch_manhattan or classifier_batch_manhattan):
        raise ValueError("Batch Manhattan is an SGD update (sign of the gradient): use sgd")
    body, head = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if name.startswith(CLASSIFIER + ".") else body).append(param)
    groups = [
        {"params": body, "name": "body"},
        {
            "params": head,
            "lr": lr if classifier_lr is None else classifier_lr,
            "name": "classifier",
        },
    ]
    if optimizer == "adamw":
        return torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay
        )
    groups[0]["batch_manhattan"] = batch_manhattan
    groups[1]["batch_manhattan"] = classifier_batch_manhattan
    return BatchManhattanSGD(
        [g for g in groups if g["params"]],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )
