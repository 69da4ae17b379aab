"""Direct feedback alignment (Nøkland 2016) on a layered classifier (plain torch).

With ``e = dL/dlogits``, the gradient arriving at hidden layer l's output ``h_l = f(a_l)`` is
replaced by ``B_l e``, so autograd through the activation gives ``delta_l = (B_l e) * f'(a_l)``
at the pre-activation and backprop's local dL/dW_l from it. Nothing flows between layers (each
layer's input is detached). B_l is fixed, N(0, scale^2) with ``scale = 1 / sqrt(K)`` by
default (K = number of classes), drawn from ``derive_seed(seed, "dfa", l)`` and saved as the
buffer ``feedback_{l}``. For a conv layer (output C x H x W), B_l is C x K: e is projected to
the layer's channels and the same value broadcast over all its positions.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..feedback.rules import derive_seed
from .networks import ConvNetSpec, LayeredClassifier


class _DirectFeedback(torch.autograd.Function):
    """Identity on the logits; backward sends ``B_l e`` (broadcast) to each hidden output."""

    @staticmethod
    def forward(ctx, logits: Tensor, feedbacks: tuple, *hidden: Tensor) -> Tensor:
        ctx.feedbacks = feedbacks
        ctx.shapes = [h.shape for h in hidden]
        return logits.clone()

    @staticmethod
    def backward(ctx, error: Tensor):
        projected = []
        for feedback, shape in zip(ctx.feedbacks, ctx.shapes):
            signal = error @ feedback.t().to(error.dtype)
            projected.append(signal.view(*signal.shape, *[1] * (len(shape) - 2)).expand(shape))
        return (error, None, *projected)


class DFAClassifier(LayeredClassifier):
    """A layered classifier whose ``forward`` trains by DFA under ``loss.backward()``.

    ``input_shape`` (one sample, e.g. ``(1, 28, 28)``) fixes the hidden shapes that size B;
    ``compose`` still gives the plain (backprop) composition. No auxiliary outputs.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        num_classes: int,
        input_shape: Sequence[int],
        *,
        seed: int = 0,
        scale: Optional[float] = None,
    ):
        super().__init__(layers, num_classes)
        scale = num_classes**-0.5 if scale is None else scale
        if not scale > 0:
            raise ValueError(f"DFA feedback scale must be > 0, got {scale}")
        weight = next(self.layers.parameters())
        with torch.no_grad():
            h = weight.new_zeros(1, *input_shape)
            for index, layer in enumerate(self.layers[:-1]):
                h = layer(h)
                generator = torch.Generator().manual_seed(derive_seed(seed, "dfa", index))
                feedback = torch.randn(h.shape[1], num_classes, generator=generator) * scale
                self.register_buffer(f"feedback_{index}", feedback.to(weight))
            outputs = self.layers[-1](h).shape[1]
        if outputs != num_classes:
            raise ValueError(f"DFA needs {num_classes} outputs (no auxiliary units), got {outputs}")

    def feedback_matrices(self) -> list:
        """``[B_0, .., B_{L-2}]``, B_l of shape (channels or features of h_{l+1}, K)."""
        return [getattr(self, f"feedback_{index}") for index in range(len(self.layers) - 1)]

    def forward(self, x: Tensor) -> Tensor:
        hidden = []
        for layer in self.layers[:-1]:
            hidden.append(layer(x.detach()))
            x = hidden[-1]
        logits = self.layers[-1](x.detach())
        return _DirectFeedback.apply(logits, tuple(self.feedback_matrices()), *hidden)


def build_dfa_classifier(
    spec: ConvNetSpec, *, seed: int = 0, scale: Optional[float] = None
) -> DFAClassifier:
    """The spec's network trained by DFA (the spec must have no auxiliary outputs)."""
    input_shape = (spec.in_channels, spec.image_size, spec.image_size)
    return DFAClassifier(spec.layers(), spec.num_classes, input_shape, seed=seed, scale=scale)
