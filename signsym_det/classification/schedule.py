"""Per-iteration learning-rate schedule: linear warmup, then step or cosine decay.

factor(t) = warmup: f0 + (1 - f0) * t / T_w for t < T_w; then
  step:   gamma ** (number of milestones <= t)
  cosine: 0.5 * (1 + cos(pi * (t - T_w) / (T - T_w)))
Each group's lr = its ``initial_lr`` * factor(t). The state is plain values (weights-only safe).
"""

from __future__ import annotations

import bisect
import math

SCHEDULES = ("step", "cosine")


class LRSchedule:
    """Sets every param group's lr for iteration ``t`` (call :meth:`apply` before each step)."""

    def __init__(
        self,
        optimizer,
        *,
        total_iters: int,
        schedule: str = "step",
        milestones=(),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.1,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r} is not one of {SCHEDULES}")
        self.optimizer = optimizer
        self.total_iters = int(total_iters)
        self.schedule = schedule
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.last_iter = -1
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, t: int) -> float:
        """The multiplier of the initial lr at iteration ``t`` (0-based)."""
        if t < self.warmup_iters:
            alpha = t / self.warmup_iters
            return self.warmup_factor + (1 - self.warmup_factor) * alpha
        if self.schedule == "step":
            return self.gamma ** bisect.bisect_right(self.milestones, t)
        span = max(1, self.total_iters - self.warmup_iters)
        progress = min(1.0, (t - self.warmup_iters) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))

    def apply(self, t: int) -> float:
        """Set the lrs for iteration ``t``; returns the factor."""
        factor = self.factor(t)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self.last_iter = t
        return factor

    def state_dict(self) -> dict:
        keys = ("total_iters", "schedule", "milestones", "gamma", "warmup_iters", "warmup_factor")
        return {key: getattr(self, key) for key in keys} | {"last_iter": self.last_iter}

    def load_state_dict(self, state: dict) -> None:
        self.last_iter = int(state["last_iter"])
        if self.last_iter >= 0:
            self.apply(self.last_iter)
