"""SGD with optional Batch Manhattan (Liao et al. 2016) per parameter group (or AdamW), and
the learning-rate schedule as an fvcore ParamScheduler (detectron2's LRScheduler hook runs it).

Batch Manhattan (:class:`signsym_det.optim.BatchManhattanSGD`): the loss gradient of the batch
is replaced by its sign before SGD's weight decay and momentum.
Groups: the network body and the classifier ``fc`` (own lr and Batch Manhattan flag, as in
Xiao et al.'s script). A trainable feedback tensor (Kolen-Pollack's B) sits in the group of
its layer and gets the same treatment as the layer's weight.
"""

from __future__ import annotations

import bisect

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)
from torch import nn

from ..optim import BatchManhattanSGD
from .model import CLASSIFIER

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


SCHEDULES = ("step", "cosine")


def lr_multiplier(
    schedule: str,
    *,
    total_iters: int,
    milestones=(),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.1,
) -> ParamScheduler:
    """factor(t / T): the multiplier of every group's initial lr at iteration t of T.

    Warmup: f0 + (1 - f0) * t / T_w for t < T_w; then step: gamma ** (number of milestones
    <= t), or cosine: 0.5 * (1 + cos(pi * (t - T_w) / (T - T_w))). Milestones are iterations.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r} is not one of {SCHEDULES}")
    total, warmup = int(total_iters), int(warmup_iters)
    if warmup >= total:  # training ends inside the warmup
        return LinearParamScheduler(
            warmup_factor, warmup_factor + (1 - warmup_factor) * total / max(warmup, 1)
        )
    if schedule == "cosine":
        main, scaling = CosineParamScheduler(1.0, 0.0), "rescaled"
    else:
        reached = sorted(int(m) for m in milestones if int(m) < total)
        starts = sorted({m for m in reached if m > 0})  # fvcore's milestones: distinct, > 0
        values = [gamma ** bisect.bisect_right(reached, m) for m in (0, *starts)]
        main, scaling = MultiStepParamScheduler(values, total, starts), "fixed"
    if warmup <= 0:
        return main
    return CompositeParamScheduler(
        [LinearParamScheduler(warmup_factor, 1.0), main],
        lengths=[warmup / total, 1 - warmup / total],
        interval_scaling=["rescaled", scaling],
    )
