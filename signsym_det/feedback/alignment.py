"""Angles (degrees) between a rule's feedback and backprop's, per feedback layer.

* ``weight_alignment(model)`` -> ``{layer: angle(flatten(B), flatten(W))}``.
* ``gradient_alignment(model)`` is a context manager yielding a dict that the backward passes
  of forwards run inside it fill with ``{layer: angle(rule dL/dx, backprop dL/dx)}``, both
  computed from the same incoming g (rule: conv_transpose(g, B), backprop:
  conv_transpose(g, W))::

      with gradient_alignment(model) as angles:
          model(images).sum().backward()
      print(angles)

  A layer called several times (a shared head) gets the angle between its concatenated input
  gradients of all calls. Layers whose input needs no gradient are absent. The extra backprop
  input gradient (and a host read per layer) is paid only inside an enabled context.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import feedback_layers


def angle_degrees(a: Tensor, b: Tensor) -> float:
    """Angle between flatten(a) and flatten(b), exact for parallel vectors (nan if one is 0)."""
    a = a.detach().flatten().double()
    b = b.detach().flatten().double()
    a, b = a / a.norm(), b / b.norm()
    return math.degrees(2 * math.atan2(float((a - b).norm()), float((a + b).norm())))


def weight_alignment(module: nn.Module) -> dict[str, float]:
    """Per feedback layer: the angle between its current B and W."""
    return {
        name: angle_degrees(layer.feedback_matrix(), layer.weight)
        for name, layer in feedback_layers(module)
    }


class gradient_alignment:
    """Context manager: angles between each layer's rule and backprop input gradients.

    ``__enter__`` returns the dict ``self.angles``, filled during later backward passes.
    """

    def __init__(self, module: nn.Module, enabled: bool = True):
        self.module = module
        self.enabled = enabled
        self.angles: dict[str, float] = {}
        self._sums: dict[str, list[float]] = {}

    def __enter__(self) -> dict[str, float]:
        if self.enabled:
            for name, layer in feedback_layers(self.module):
                layer._alignment_observer = self._observer(name)
        return self.angles

    def __exit__(self, *exc_info) -> None:
        for _, layer in feedback_layers(self.module):
            layer.__dict__.pop("_alignment_observer", None)

    def _observer(self, name: str):
        def observe(rule_grad: Tensor, backprop_grad: Tensor) -> None:
            a, b = rule_grad.flatten().double(), backprop_grad.flatten().double()
            dots = torch.stack([a.dot(b), a.dot(a), b.dot(b)]).tolist()
            sums = self._sums.setdefault(name, [0.0, 0.0, 0.0])
            sums[:] = [total + new for total, new in zip(sums, dots)]
            cosine = sums[0] / math.sqrt(sums[1] * sums[2]) if sums[1] * sums[2] > 0 else math.nan
            self.angles[name] = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))

        return observe
