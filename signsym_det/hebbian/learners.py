"""Learners that train a plain nn.Linear / nn.Conv2d weight in place by the Krotov-Hopfield rule.

Each ``step(inputs)`` turns the unlabelled inputs into samples v (rows), computes ΔW with
:func:`~.rule.krotov_hopfield_delta` and applies W <- W + eps(t) ΔW / max|ΔW| with eps(t)
decaying linearly to 0 over ``total_steps``. The layer stays a plain layer (its bias is not
touched); the learner's ``state_dict`` holds only its step count, settings and generator state,
the weights live in the layer's own state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rule import (
    LinearDecay,
    check_rule_arguments,
    krotov_hopfield_update,
    largest_magnitude,
    normalised_step_,
)

PATCH_NORMS = (None, "zero_mean", "unit_norm", "zero_mean_unit_norm")


@dataclass(frozen=True)
class StepRecord:
    """What one step did: its eps, mean |applied change| (0-d, on the weight's device) and
    the (samples,) index of each sample's winning unit (on the weight's device)."""

    eps: float
    mean_abs_change: Tensor
    winners: Tensor


class HebbianLearner:
    """Trains ``layer.weight``, viewed as (hidden, N), on the samples given by ``samples``.

    ``total_steps`` steps with eps(t) = eps0 (1 - t / total_steps); ``p``, ``k``, ``delta`` as
    in :func:`~.rule.krotov_hopfield_delta` (Krotov & Hopfield: p = 2 to 4, k = 2, delta = 0.4
    on MNIST, 0.1 on CIFAR).
    """

    layer_type: type = nn.Module

    def __init__(
        self,
        layer: nn.Module,
        total_steps: int,
        eps0: float = 0.02,
        p: float = 2.0,
        k: int = 2,
        delta: float = 0.4,
    ):
        if not isinstance(layer, self.layer_type):
            raise TypeError(
                f"{type(self).__name__} trains a {self.layer_type.__name__}, "
                f"got {type(layer).__name__}"
            )
        check_rule_arguments(layer.weight.shape[0], p, k, delta)
        self.layer = layer
        self.schedule = LinearDecay(eps0, total_steps)
        self.p, self.k, self.delta = p, k, delta
        self.steps_done = 0

    def samples(self, inputs: Tensor) -> Tensor:
        """The (batch, N) samples v of one step, on the weight's device and dtype."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, inputs: Tensor) -> StepRecord:
        """One update of the layer's weight from unlabelled ``inputs`` (any device)."""
        if self.steps_done >= self.schedule.total_steps:
            raise RuntimeError(
                f"all {self.schedule.total_steps} steps are done (eps has decayed to 0); "
                "make a learner with a larger total_steps to train further"
            )
        weight = self.layer.weight
        samples = self.samples(inputs.to(device=weight.device, dtype=weight.dtype))
        update, winners = krotov_hopfield_update(
            weight.reshape(weight.shape[0], -1), samples, self.p, self.k, self.delta
        )
        eps = self.schedule(self.steps_done)
        normalised_step_(weight, update.view_as(weight), eps)
        self.steps_done += 1
        return StepRecord(eps, eps * update.abs().mean() / largest_magnitude(update), winners)

    def settings(self) -> dict:
        """The learner's hyperparameters, as plain values."""
        return {
            "total_steps": self.schedule.total_steps,
            "eps0": self.schedule.eps0,
            "p": self.p,
            "k": self.k,
            "delta": self.delta,
        }

    def state_dict(self) -> dict:
        """Plain values to resume from: the step count and the settings (checked on load)."""
        return {"steps_done": self.steps_done, **self.settings()}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state["steps_done"]``; the settings must equal this learner's."""
        for key, value in self.settings().items():
            if state.get(key) != value:
                raise ValueError(
                    f"saved learner has {key}={state.get(key)!r}, this one {key}={value!r}"
                )
        self.steps_done = int(state["steps_done"])


class LinearHebbianLearner(HebbianLearner):
    """The hidden layer of Krotov & Hopfield: each input sample (flattened) is one v."""

    layer_type = nn.Linear

    def samples(self, inputs: Tensor) -> Tensor:
        if inputs.dim() < 2 or math.prod(inputs.shape[1:]) != self.layer.in_features:
            raise ValueError(
                f"inputs must be (batch, ...) with {self.layer.in_features} values per sample "
                f"(in_features), got shape {tuple(inputs.shape)}"
            )
        return inputs.flatten(1)


class Conv2dHebbianLearner(HebbianLearner):
    """The patches are the samples: every (image, output position) gives one v of C*kh*kw
    values, ordered like the weight (C, kh, kw), so the filters compete at each position.

    ``max_patches``: use at most this many patches per step, drawn without replacement with
    ``generator`` (required then, on the weight's device); only those patches are gathered.
    ``patch_norm``: one of :data:`PATCH_NORMS`, applied per patch (zero mean, unit L2 norm).
    ``rule_settings``: eps0, p, k, delta as for :class:`HebbianLearner`.
    """

    layer_type = nn.Conv2d

    def __init__(
        self,
        layer: nn.Conv2d,
        total_steps: int,
        *,
        max_patches: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        patch_norm: Optional[str] = None,
        **rule_settings,
    ):
        super().__init__(layer, total_steps, **rule_settings)
        if layer.groups != 1 or isinstance(layer.padding, str):
            raise ValueError(
                f"Conv2dHebbianLearner needs groups=1 and an int padding, "
                f"got groups={layer.groups}, padding={layer.padding!r}"
            )
        if max_patches is not None and not (isinstance(max_patches, int) and max_patches >= 1):
            raise ValueError(f"max_patches must be None or an int >= 1, got {max_patches!r}")
        if max_patches is not None and generator is None:
            raise ValueError("max_patches needs a torch.Generator (on the weight's device)")
        if patch_norm not in PATCH_NORMS:
            raise ValueError(f"patch_norm {patch_norm!r} is not one of {PATCH_NORMS}")
        self.max_patches, self.generator, self.patch_norm = max_patches, generator, patch_norm

    def samples(self, inputs: Tensor) -> Tensor:
        if inputs.dim() != 4 or inputs.shape[1] != self.layer.in_channels:
            raise ValueError(
                f"inputs must be (batch, {self.layer.in_channels}, H, W), "
                f"got shape {tuple(inputs.shape)}"
            )
        patches = self.gather_patches(inputs)
        if self.patch_norm in ("zero_mean", "zero_mean_unit_norm"):
            patches = patches - patches.mean(1, keepdim=True)
        if self.patch_norm in ("unit_norm", "zero_mean_unit_norm"):
            norm = patches.norm(dim=1, keepdim=True).clamp_min(torch.finfo(patches.dtype).tiny)
            patches = patches / norm
        return patches

    def gather_patches(self, images: Tensor) -> Tensor:
        """(n, C*kh*kw) patches the layer sees: all of them, or ``max_patches`` drawn at random."""
        layer, device = self.layer, images.device
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
        (ph, pw), mode = layer.padding, layer.padding_mode
        padded = F.pad(images, (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode)
        out_h = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
        out_w = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"images {tuple(images.shape)} are smaller than the kernel")
        total = images.shape[0] * out_h * out_w
        if self.max_patches is None or total <= self.max_patches:
            index = torch.arange(total, device=device)
        else:
            if self.generator.device != device:
                raise ValueError(f"generator is on {self.generator.device}, the weight on {device}")
            index = torch.randperm(total, generator=self.generator, device=device)
            index = index[: self.max_patches]
        image, position = index.div(out_h * out_w, rounding_mode="floor"), index % (out_h * out_w)
        rows = (position.div(out_w, rounding_mode="floor") * sh).unsqueeze(1)
        rows = rows + torch.arange(kh, device=device) * dh  # (n, kh)
        cols = (position % out_w * sw).unsqueeze(1) + torch.arange(kw, device=device) * dw
        # advanced indices around the channel slice: the result is (n, kh, kw, C)
        patches = padded[image[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return patches.permute(0, 3, 1, 2).reshape(len(index), -1)

    def settings(self) -> dict:
        return {
            **super().settings(),
            "max_patches": self.max_patches,
            "patch_norm": self.patch_norm,
        }

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.generator is not None:
            state["generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.generator is not None:
            self.generator.set_state(state["generator_state"])
