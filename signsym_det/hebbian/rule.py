"""Krotov & Hopfield's local, unsupervised "competing hidden units" rule (PNAS 2019).

For weights W (hidden, N) and samples v (batch, N): I = (sign(W) ⊙ |W|^(p-1)) v per sample; the
unit with the largest I gets g = 1, the unit ranked k-th gets g = -Δ, the others g = 0;
ΔW = Σ_batch g vᵀ - (Σ_batch g ⊙ I) ⊙ W. The step W <- W + ε ΔW / max|ΔW| drives the rows of W
to the unit sphere of the p-norm; ε decays linearly to 0 over training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _check_real(name: str, value, valid: str, ok) -> None:
    """Raise ValueError naming ``value`` unless it is a finite real number with ``ok(value)``."""
    is_real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_real and math.isfinite(value) and ok(value)):
        raise ValueError(f"{name} must be {valid}, got {value!r}")


def check_rule_arguments(hidden: int, p: float, k: int, delta: float) -> None:
    """Raise ValueError unless p >= 1, 2 <= k <= hidden (an int) and delta >= 0 (all finite)."""
    _check_real("p", p, "a real number >= 1 (typically 2, 3 or 4)", lambda x: x >= 1)
    if not (isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= hidden):
        raise ValueError(f"k must be an int in [2, {hidden}] (hidden units), got {k!r}")
    _check_real("delta", delta, "a real number >= 0 (typically 0.1 to 0.4)", lambda x: x >= 0)


def krotov_hopfield_delta(
    weight: Tensor, inputs: Tensor, p: float = 2.0, k: int = 2, delta: float = 0.4
) -> Tensor:
    """The unnormalised update ΔW = Σ_batch g vᵀ - (Σ_batch g ⊙ I) ⊙ W (see the module doc).

    ``weight``: (hidden, N); ``inputs``: (batch, N), same device and dtype. Ties in I go to
    the lower unit index as ``torch.topk`` breaks them. Returns a new tensor shaped like W.
    """
    return krotov_hopfield_update(weight, inputs, p, k, delta)[0]


def krotov_hopfield_update(
    weight: Tensor, inputs: Tensor, p: float = 2.0, k: int = 2, delta: float = 0.4
) -> tuple[Tensor, Tensor]:
    """(ΔW as :func:`krotov_hopfield_delta`, the (batch,) index of each sample's winner)."""
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(
            f"weight must be a 2-D floating-point (hidden, N) tensor, "
            f"got shape {tuple(weight.shape)} and dtype {weight.dtype}"
        )
    if inputs.dim() != 2 or inputs.shape[1] != weight.shape[1]:
        raise ValueError(
            f"inputs must be (batch, N) with N = {weight.shape[1]} (weight's columns), "
            f"got shape {tuple(inputs.shape)}"
        )
    if inputs.device != weight.device or inputs.dtype != weight.dtype:
        raise ValueError(
            f"inputs ({inputs.device}, {inputs.dtype}) must be on weight's device and dtype "
            f"({weight.device}, {weight.dtype})"
        )
    check_rule_arguments(weight.shape[0], p, k, delta)
    currents = inputs @ (weight.sign() * weight.abs().pow(p - 1)).T  # I: (batch, hidden)
    ranked = currents.topk(k, dim=1).indices  # [:, 0] the winner, [:, k-1] the k-th
    activity = torch.zeros_like(currents)  # g: (batch, hidden)
    activity.scatter_(1, ranked[:, :1], 1.0)
    activity.scatter_(1, ranked[:, k - 1 :], -delta)
    update = activity.T @ inputs - (activity * currents).sum(0).unsqueeze(1) * weight
    return update, ranked[:, 0]


def normalised_step_(weight: Tensor, update: Tensor, eps: float) -> Tensor:
    """W <- W + eps * ΔW / max|ΔW| in place (ΔW = 0 leaves W unchanged); returns ``weight``.

    No host synchronisation: the maximum stays on the device.
    """
    return weight.add_(update / largest_magnitude(update), alpha=eps)


def largest_magnitude(update: Tensor) -> Tensor:
    """max|ΔW| as a 0-d tensor on ΔW's device, at least the dtype's smallest normal number."""
    return update.abs().amax().clamp_min(torch.finfo(update.dtype).tiny)


@dataclass(frozen=True)
class LinearDecay:
    """The learning rate eps(t) = eps0 * (1 - t / total_steps) for steps t = 0 .. total_steps."""

    eps0: float
    total_steps: int

    def __post_init__(self):
        _check_real("eps0", self.eps0, "a real number > 0 (e.g. 0.02)", lambda x: x > 0)
        if not (isinstance(self.total_steps, int) and self.total_steps >= 1):
            raise ValueError(f"total_steps must be an int >= 1, got {self.total_steps!r}")

    def __call__(self, step: int) -> float:
        if not (isinstance(step, int) and 0 <= step <= self.total_steps):
            raise ValueError(f"step must be an int in [0, {self.total_steps}], got {step!r}")
        return self.eps0 * (1 - step / self.total_steps)
