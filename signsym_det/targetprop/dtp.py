"""Difference target propagation (Lee et al. 2015) and Bartunov et al.'s SDTP / AO-SDTP.

Notation: ``h_0 = x``, ``h_{l+1} = f_l(h_l)`` with ``f_l = net.layers[l]``, ``g_l`` its inverse,
``L`` layers, ``e = softmax(h_L[:, :K]) - onehot(y)`` = dL/dh_L per sample (0 on auxiliary units),
L the cross-entropy summed over the batch (so a sample's target does not depend on batch size).

* output target ``t_L = h_L - beta * e``; AO-SDTP's auxiliary units get their own values as
  targets (and no weight gradient: a fixed random projection of h_{L-1} that g_{L-1} inverts);
* ``"dtp"``: ``t_{L-1} = h_{L-1} - beta * dL/dh_{L-1}`` (autograd through f_{L-1});
  ``"sdtp"`` / ``"ao_sdtp"``: ``t_{L-1} = h_{L-1} + g_{L-1}(t_L) - g_{L-1}(h_L)``, no autograd;
* below: ``t_l = h_l + g_l(t_{l+1}) - g_l(h_{l+1})`` (the difference correction);
* hidden layer loss ``1/2 |f_l(h_l) - t_{l+1}|^2`` updating f_l only (h_l detached); the output
  layer is trained by the mean cross-entropy's gradient (its own weights only);
* inverse loss ``|g_l(f_l(h_l + eps)) - (h_l + eps)|^2``, eps ~ N(0, sigma_l^2), updating g_l
  only, for ``iterations_l`` steps of its own optimizer.

Squared errors are summed over a sample's units and averaged over the batch. One step trains
the inverses first (on this batch), then forms the targets with them, then trains f.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..feedback.rules import derive_seed
from .networks import TargetPropNet

VARIANTS = ("dtp", "sdtp", "ao_sdtp")
PerLayer = Union[float, Mapping[int, float]]


def check_variant(variant: str) -> str:
    """Return ``variant`` if it is one of :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown target-propagation variant {variant!r}; valid: {VARIANTS}")
    return variant


def inverse_layers(net: TargetPropNet, variant: str) -> list:
    """Indices l whose inverse g_l the variant uses: DTP 1..L-2, SDTP / AO-SDTP 1..L-1."""
    last = len(net.layers) - 1
    return list(range(1, last if check_variant(variant) == "dtp" else last + 1))


def squared_error(a: Tensor, b: Tensor) -> Tensor:
    """``|a - b|^2`` summed over each sample's units, averaged over the batch."""
    return (a - b).pow(2).flatten(1).sum(1).mean()


def output_error(output: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``e = softmax(output[:, :K]) - onehot(labels)`` padded with zeros on auxiliary units."""
    error = torch.zeros_like(output)
    probs = output[:, :num_classes].detach().softmax(1)
    error[:, :num_classes] = probs - F.one_hot(labels, num_classes).to(probs.dtype)
    return error


def forward_states(net: TargetPropNet, x: Tensor) -> tuple:
    """``(states, predictions)``: detached ``h_0..h_L``; each ``f_l(h_l)`` with its graph."""
    states, predictions = [x.detach()], []
    for layer in net.layers:
        predictions.append(layer(states[-1]))
        states.append(predictions[-1].detach())
    return states, predictions


@torch.no_grad()
def hidden_targets(net: TargetPropNet, states: list, labels: Tensor, beta: float, variant: str):
    """Targets ``{l: t_l}`` for the hidden states h_1..h_{L-1} (see the module docstring)."""
    last = len(net.layers) - 1
    has_aux = states[-1].shape[1] > net.num_classes
    if (check_variant(variant) == "ao_sdtp") != has_aux:
        raise ValueError(
            f"{variant} with {states[-1].shape[1] - net.num_classes} auxiliary output units:"
            " ao_sdtp needs some (ConvNetSpec aux_outputs > 0), dtp and sdtp take none"
        )
    error = output_error(states[-1], labels, net.num_classes)
    if variant == "dtp":
        with torch.enable_grad():
            h = states[last].clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(net.layers[last](h), h, error)
        targets = {last: states[last] - beta * grad}
    else:
        targets = {last + 1: states[-1] - beta * error}
    for index in range(min(targets), 1, -1):
        inverse = net.inverse(index - 1)
        correction = inverse(targets[index]) - inverse(states[index])
        targets[index - 1] = states[index - 1] + correction
    targets.pop(last + 1, None)
    return targets


def train_inverse(
    layer: nn.Module,
    inverse: nn.Module,
    inputs: Tensor,
    optimizer: torch.optim.Optimizer,
    noise: float,
    iterations: int,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Fit ``g`` to invert the fixed ``f`` near ``inputs``; mean inverse loss over iterations."""
    total = torch.zeros((), device=inputs.device)
    for _ in range(iterations):
        eps = torch.randn(
            inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype
        )
        noisy = inputs.detach() + noise * eps
        with torch.no_grad():
            output = layer(noisy)
        loss = squared_error(inverse(output), noisy)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return float(total) / max(iterations, 1)


def _per_layer(value: PerLayer, layers: list, name: str) -> dict:
    if isinstance(value, Mapping):
        if sorted(value) != layers:
            raise ValueError(f"{name} must give layers {layers} exactly, got {sorted(value)}")
        return dict(value)
    return {index: value for index in layers}


def make_inverse_optimizers(
    net: TargetPropNet,
    variant: str,
    inverse_lr: PerLayer,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
) -> dict:
    """``{l: optimizer}`` for each inverse the variant uses."""
    inverse_lrs = _per_layer(inverse_lr, inverse_layers(net, variant), "inverse_lr")
    return {i: optimizer(net.inverse(i).parameters(), lr=lr) for i, lr in inverse_lrs.items()}


def make_dtp_optimizers(
    net: TargetPropNet,
    variant: str,
    forward_lr: PerLayer,
    inverse_lr: PerLayer,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
) -> tuple:
    """``(forward, inverse)``: ``{l: optimizer}`` per layer and per used inverse."""
    forward_lrs = _per_layer(forward_lr, list(range(len(net.layers))), "forward_lr")
    forward = {i: optimizer(net.layers[i].parameters(), lr=lr) for i, lr in forward_lrs.items()}
    return forward, make_inverse_optimizers(net, variant, inverse_lr, optimizer)


class DTPStep:
    """One DTP / SDTP / AO-SDTP training step on a batch; see the module docstring.

    ``forward_optimizers``: ``{l: optimizer}`` covering the layers to train (any parameters of
    one layer only), or one optimizer over the parameters of ``net.layers``;
    ``inverse_optimizers``: ``{l: optimizer}`` for exactly
    :func:`inverse_layers`. ``noise`` (sigma) and ``inverse_iterations`` are per layer (a number
    or ``{l: value}``). Noise comes from ``derive_seed(seed, "dtp", iteration)``. Each layer's
    ``.grad`` holds this step's gradient afterwards (see :mod:`.diagnostics`).
    """

    def __init__(
        self,
        net: TargetPropNet,
        forward_optimizers: Union[torch.optim.Optimizer, Mapping[int, torch.optim.Optimizer]],
        inverse_optimizers: Mapping[int, torch.optim.Optimizer],
        *,
        variant: str = "dtp",
        beta: float = 0.5,
        noise: PerLayer = 0.1,
        inverse_iterations: PerLayer = 1,
        seed: int = 0,
    ):
        self.net, self.variant, self.beta, self.seed = net, check_variant(variant), beta, seed
        used = inverse_layers(net, variant)
        if isinstance(forward_optimizers, torch.optim.Optimizer):
            forward_optimizers = {index: forward_optimizers for index in range(len(net.layers))}
        for name, given in (("forward", forward_optimizers), ("inverse", inverse_optimizers)):
            if not isinstance(given, Mapping):
                raise ValueError(f"{name}_optimizers must be {{layer index: optimizer}}")
        if not set(forward_optimizers) <= set(range(len(net.layers))):
            raise ValueError(f"forward_optimizers keys {sorted(forward_optimizers)} are not layers")
        distinct = {id(optimizer): optimizer for optimizer in forward_optimizers.values()}
        self.forward_optimizers = list(distinct.values())
        self.inverse_optimizers = _per_layer(inverse_optimizers, used, "inverse_optimizers")
        self.noise = _per_layer(noise, used, "noise")
        self.inverse_iterations = _per_layer(inverse_iterations, used, "inverse_iterations")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")

    def __call__(self, x: Tensor, labels: Tensor, iteration: int) -> dict:
        """Train on ``(x, labels)``; returns ``total_loss`` (mean cross-entropy before the
        update) and per layer ``forward_loss/{l}`` and ``inverse_loss/{l}``."""
        net, last = self.net, len(self.net.layers) - 1
        states, predictions = forward_states(net, x)
        generator = torch.Generator(device=x.device).manual_seed(
            derive_seed(self.seed, "dtp", iteration)
        )
        metrics = {
            f"inverse_loss/{index}": train_inverse(
                net.layers[index],
                net.inverse(index),
                states[index],
                optimizer,
                self.noise[index],
                self.inverse_iterations[index],
                generator,
            )
            for index, optimizer in self.inverse_optimizers.items()
        }
        targets = hidden_targets(net, states, labels, self.beta, self.variant)
        losses = {
            index: 0.5 * squared_error(predictions[index - 1], target)
            for index, target in targets.items()
        }
        cross_entropy = F.cross_entropy(predictions[last][:, : net.num_classes], labels)
        losses[last + 1] = cross_entropy
        net.layers.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        for optimizer in self.forward_optimizers:
            optimizer.step()
        values = torch.stack([loss.detach() for loss in losses.values()]).tolist()
        metrics.update({f"forward_loss/{i - 1}": v for i, v in zip(losses, values)})
        metrics["total_loss"] = values[-1]
        return metrics
