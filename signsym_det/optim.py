"""SGD with per-group gradient techniques, in plain torch: Batch Manhattan and norm clipping.

Before SGD's weight decay and momentum, in this order, per parameter group:

* ``max_grad_norm`` > 0: the gradients of all groups sharing the group's ``clip_set`` name
  (a detector part, say) are scaled by ``min(1, c / ||g||_2)``, ``||g||_2`` their joint norm;
* ``batch_manhattan=True`` (Liao et al. 2016): ``g <- sign(g)``, so a step is
  ``v = mu * v + sign(g) + wd * w; w -= lr * v``.

Both act on every gradient of the group, so a trainable feedback tensor (Kolen-Pollack's B)
gets the treatment of the weights it sits with.
"""

from __future__ import annotations

from collections import defaultdict

import torch


def clip_group_norms(param_groups) -> None:
    """Scale the gradients of each ``clip_set`` whose groups have ``max_grad_norm`` > 0 so
    that their joint L2 norm is at most that value (the first group of a set gives it)."""
    sets, limits = defaultdict(list), {}
    for group in param_groups:
        limit = group.get("max_grad_norm", 0.0)
        if limit > 0:
            name = group.get("clip_set")
            limits.setdefault(name, limit)
            sets[name].extend(p for p in group["params"] if p.grad is not None)
    for name, params in sets.items():
        if params:
            torch.nn.utils.clip_grad_norm_(params, limits[name])


class BatchManhattanSGD(torch.optim.SGD):
    """torch.optim.SGD whose groups may clip (``max_grad_norm``, ``clip_set``) and step on
    sign(grad) (``batch_manhattan``), as the module docstring says; plain SGD otherwise."""

    def __init__(self, params, lr: float, **kwargs):
        super().__init__(params, lr=lr, **kwargs)
        for group in self.param_groups:
            group.setdefault("batch_manhattan", False)
            group.setdefault("max_grad_norm", 0.0)
            group.setdefault("clip_set", None)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clip_group_norms(self.param_groups)
        for group in self.param_groups:
            if group["batch_manhattan"]:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.sign_()
        super().step()
        return loss
