"""LocallyConnected2d: a conv with untied weights (one filter bank per output position).

With patches ``P = unfold(x)`` (N, C_in*kh*kw, L), L = H_out * W_out positions, and
``W[i, j]`` the (C_out, C_in, kh, kw) filters of position (i, j)::

    y[n, :, i, j] = W[i, j].flatten(1) @ P[n, :, (i, j)] + b[i, j]

so a layer whose positions all hold a conv's filters is that conv
(:meth:`LocallyConnected2d.from_conv`). :class:`FeedbackLocallyConnected2d` is its feedback
version (what :func:`.convert` makes of it): dL/dx = fold(B[l]^T g[:, :, l]) per position l
with the rule's B (W's shape); dL/dW[l] = g[:, :, l] P[:, :, l]^T and dL/db[l] = sum g[:, :, l]
are backprop's. The xiao scale is the conv's, sqrt(2 / (kh * kw * C_out)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .function import _release, _save_inputs, _saved_inputs
from .layers import FeedbackLayer
from .rules import scale_factor


@dataclass(frozen=True)
class Geometry:
    """Kernel, stride, padding, dilation (pairs) and the input size (H, W) of a layer."""

    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    input_size: tuple

    def output_size(self) -> tuple:
        return tuple(
            (size + 2 * pad - dil * (k - 1) - 1) // step + 1
            for size, k, step, pad, dil in zip(
                self.input_size, self.kernel_size, self.stride, self.padding, self.dilation
            )
        )

    def unfold(self, x: Tensor) -> Tensor:
        """The patches P of ``x``: (N, C_in*kh*kw, L)."""
        return F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)

    def fold(self, patches: Tensor) -> Tensor:
        """The adjoint of :meth:`unfold`: sums patch entries back into (N, C_in, H, W)."""
        return F.fold(
            patches, self.input_size, self.kernel_size, self.dilation, self.padding, self.stride
        )


def _per_position(weight: Tensor) -> Tensor:
    """(H_out, W_out, C_out, C_in, kh, kw) -> (L, C_out, C_in*kh*kw)."""
    return weight.flatten(0, 1).flatten(2)


def locally_connected(x: Tensor, weight: Tensor, bias, geometry: Geometry) -> Tensor:
    """y[n, o, l] = sum_k W[l, o, k] P[n, k, l] + b[l, o], shaped (N, C_out, H_out, W_out)."""
    y = torch.einsum("nkl,lok->nol", geometry.unfold(x), _per_position(weight))
    y = y.unflatten(2, weight.shape[:2])
    return y if bias is None else y + bias.permute(2, 0, 1)


class LocallyConnected2dFunction(torch.autograd.Function):
    """Forward :func:`locally_connected`; dL/dx = fold(B^T g) per position (see the module)."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, observer, geometry):
        _save_inputs(ctx, x, weight, feedback, observer)
        ctx.geometry = geometry
        return locally_connected(x, weight, bias, geometry)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        need_x, need_w, need_b, need_feedback = ctx.needs_input_grad[:4]
        x, weight, feedback = _saved_inputs(ctx, need_x)
        geometry = ctx.geometry
        g = grad_out.flatten(2)  # (N, C_out, L)

        def input_grad(kernel: Tensor) -> Tensor:
            return geometry.fold(torch.einsum("nol,lok->nkl", g, _per_position(kernel)))

        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = input_grad(feedback)
            if ctx.observer is not None:
                ctx.observer(grad_x, input_grad(weight))
        if need_w or need_feedback:
            grad_w = torch.einsum("nol,nkl->lok", g, geometry.unfold(x)).reshape(weight.shape)
        if need_b:
            grad_b = g.sum(0).t().reshape(weight.shape[:3])
        _release(ctx)
        grad_feedback = grad_w if need_feedback else None
        grad_w = grad_w if need_w else None
        return grad_x, grad_w, grad_b, grad_feedback, None, None


class LocallyConnected2d(nn.Module):
    """Conv2d's arguments plus ``input_size`` (H, W); weight (H_out, W_out, C_out, C_in, kh, kw),
    bias (H_out, W_out, C_out); init per position as Conv2d's (U(+-1/sqrt(C_in*kh*kw)))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        input_size,
    ):
        super().__init__()
        if groups != 1 or padding_mode != "zeros":
            raise ValueError(
                f"LocallyConnected2d supports groups=1 and padding_mode='zeros' only, got "
                f"groups={groups}, padding_mode={padding_mode!r}"
            )
        if isinstance(padding, str):
            raise ValueError(f"LocallyConnected2d needs int padding, got {padding!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.geometry = Geometry(
            _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation), _pair(input_size)
        )
        output_size = self.geometry.output_size()
        if min(output_size) < 1 or min(self.geometry.input_size) < 1:
            raise ValueError(f"LocallyConnected2d {self.geometry} has no output position")
        factory = {"device": device, "dtype": dtype}
        shape = (*output_size, out_channels, in_channels, *self.geometry.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(shape[:3], **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(math.prod(self.weight.shape[3:]))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size) -> "LocallyConnected2d":
        """A layer whose every position holds ``conv``'s weight and bias (copies): on inputs of
        ``input_size`` it computes what the conv computes, forward and backward."""
        if getattr(conv, "norm", None) is not None or getattr(conv, "activation", None):
            raise ValueError("from_conv copies a bare conv: this one has a norm or activation")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            conv.weight.device,
            conv.weight.dtype,
            input_size=input_size,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight.expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.expand_as(layer.bias))
        return layer

    def _check_input(self, x: Tensor) -> None:
        if tuple(x.shape[-2:]) != self.geometry.input_size or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} takes (N, {self.in_channels}, "
                f"{', '.join(map(str, self.geometry.input_size))}) inputs, got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return locally_connected(x, self.weight, self.bias, self.geometry)

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={g.kernel_size}, "
            f"stride={g.stride}, padding={g.padding}, dilation={g.dilation}, "
            f"input_size={g.input_size}, bias={self.bias is not None}"
        )


class FeedbackLocallyConnected2d(FeedbackLayer, LocallyConnected2d):
    """LocallyConnected2d whose dL/dx uses the rule's B (``convert`` makes it; see the module)."""

    def __init__(self, *args, input_size, rule: str = "sign_symmetry", scale=None, seed=0, **kw):
        super().__init__(*args, input_size=input_size, **kw)
        self.attach_feedback(rule, scale, seed, plain_class=LocallyConnected2d)

    def feedback_scale(self, weight: Tensor):
        """The scale of the filters seen as one conv over all positions (C_out first)."""
        filters = weight.transpose(0, 2).flatten(1, 3)  # (C_out, W_out*H_out*C_in, kh, kw)
        return scale_factor(self.scale, filters)

    def forward(self, x: Tensor) -> Tensor:
        if not self._needs_feedback(x):
            return super().forward(x)
        self._check_input(x)
        return self._apply_feedback(LocallyConnected2dFunction, x, self.geometry)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._feedback_repr()
