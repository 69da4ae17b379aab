"""Autograd Functions for conv and linear whose input gradient uses a feedback matrix B.

Forward is the plain op. Backward: dL/dx = conv_transpose(g, B) (Linear: g @ B), while dL/dW
and dL/db are exactly backprop's. A B that requires grad receives dL/dW (Kolen-Pollack).

``feedback`` is either the tensor B or a callable ``weight -> B`` evaluated lazily in backward
(only if dL/dx is needed), so rules recomputed from W cost nothing in forward; a callable with
a ``release()`` method (``LazyFeedback``) is told when its backward is done with it. ``observer``
(or None) is called as ``observer(rule_grad_x, backprop_grad_x)`` for gradient alignment.

A trainable B (Kolen-Pollack) gets dL/dW as the very same tensor as W: autograd's gradient
accumulation copies it where W's and B's gradients would otherwise alias, so the copy is made
once per iteration at most rather than once per call.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .cache import TensorVersion

Feedback = Union[Tensor, Callable[[Tensor], Tensor]]
Observer = Optional[Callable[[Tensor, Tensor], None]]


def _save_inputs(ctx, x: Tensor, weight: Tensor, feedback: Feedback, observer: Observer):
    if isinstance(feedback, Tensor):
        ctx.save_for_backward(x, weight, feedback)
        ctx.make_feedback = None
    else:
        ctx.save_for_backward(x, weight)
        ctx.make_feedback = feedback
    ctx.observer = observer


def _saved_inputs(ctx, need_x: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(x, W, B); B is W itself when dL/dx is not needed (only its shape matters then)."""
    x, weight, *stored = ctx.saved_tensors
    if not need_x:
        return x, weight, weight
    return x, weight, stored[0] if stored else ctx.make_feedback(weight)


def _release(ctx) -> None:
    """Tell a lazy feedback source that this call's backward is done with it."""
    release = getattr(ctx.make_feedback, "release", None)
    if release is not None:
        release()


_convolution_backward = torch.ops.aten.convolution_backward.default


class FeedbackConv2dFunction(torch.autograd.Function):
    """y = conv2d(x, W, b); dL/dx = conv_transpose2d(g, B) via one convolution_backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, observer, stride, padding, dilation, groups):
        _save_inputs(ctx, x, weight, feedback, observer)
        ctx.geometry = (list(stride), list(padding), list(dilation), groups)
        ctx.bias_sizes = None if bias is None else [bias.shape[0]]
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        need_x, need_w, need_b, need_feedback = ctx.needs_input_grad[:4]
        x, weight, feedback = _saved_inputs(ctx, need_x)
        stride, padding, dilation, groups = ctx.geometry
        mask = [need_x, need_w or need_feedback, need_b]

        def conv_grads(kernel, bias_sizes, grad_mask):
            """(dL/dx with ``kernel``, dL/dW, dL/db): one aten.convolution_backward call."""
            return _convolution_backward(
                grad_out, x, kernel, bias_sizes, stride, padding, dilation, False, [0, 0],
                groups, grad_mask,
            )  # fmt: skip

        grad_x, grad_w, grad_b = conv_grads(feedback, ctx.bias_sizes, mask)
        if need_x and ctx.observer is not None:
            ctx.observer(grad_x, conv_grads(weight, None, [True, False, False])[0])
        _release(ctx)
        grad_feedback = grad_w if need_feedback else None
        grad_w = grad_w if need_w else None
        return grad_x, grad_w, grad_b, grad_feedback, None, None, None, None, None


class FeedbackLinearFunction(torch.autograd.Function):
    """y = x W^T + b over the last dim; dL/dx = g @ B, dL/dW = g^T x, dL/db = sum g."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, observer):
        _save_inputs(ctx, x, weight, feedback, observer)
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        need_x, need_w, need_b, need_feedback = ctx.needs_input_grad[:4]
        x, weight, feedback = _saved_inputs(ctx, need_x)
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.mm(grad_rows, feedback).reshape(x.shape)
            if ctx.observer is not None:
                ctx.observer(grad_x, torch.mm(grad_rows, weight).reshape(x.shape))
        if need_w or need_feedback:
            grad_w = torch.mm(grad_rows.t(), x.reshape(-1, x.shape[-1]))
        if need_b:
            grad_b = grad_rows.sum(0)
        _release(ctx)
        grad_feedback = grad_w if need_feedback else None
        grad_w = grad_w if need_w else None
        return grad_x, grad_w, grad_b, grad_feedback, None


def _autocast_cast(value, dtype: torch.dtype):
    """Cast a floating, non-float64 tensor to ``dtype`` (autograd-tracked), as autocast does."""
    eligible = isinstance(value, Tensor) and value.is_floating_point()
    if eligible and value.dtype not in (dtype, torch.float64):
        return value.to(dtype)
    return value


class AutocastCasts(dict):
    """A layer's low-precision copies of its W, b and B under autocast, shared by its calls.

    Like autocast's own cache of parameter casts: a layer called several times per iteration
    (RetinaNet's head) casts W once, not once per call, and autograd keeps one copy for
    backward. An entry ``slot -> (TensorVersion of the source, weak reference to the copy)``
    is reused while the source is unchanged (:class:`.cache.TensorVersion`); a copy lives
    exactly as long as a graph saves it. Copies and pickles are empty.
    """

    def cast(self, slot: str, value, dtype: torch.dtype):
        """``value`` in ``dtype`` (see :func:`_autocast_cast`), from the cache if still valid."""
        entry = dict.get(self, slot)
        if entry is not None and entry[0].matches(value):
            cast = entry[1]()
            if cast is not None and cast.dtype == dtype and cast.device == value.device:
                return cast
        cast = _autocast_cast(value, dtype)
        if cast is not value and torch.is_autocast_cache_enabled():
            self[slot] = (TensorVersion(value), weakref.ref(cast))
        return cast

    def __reduce__(self):
        return (AutocastCasts, ())

    def __deepcopy__(self, memo):
        return AutocastCasts()


def apply_autocast_aware(function, x: Tensor, weight: Tensor, bias, feedback, *args, casts=None):
    """``function.apply(x, W, b, feedback, *args)``, in autocast's dtype when autocast is on.

    ``casts`` (an :class:`AutocastCasts` or None) shares the casts of W, b and a tensor B
    between the calls of one layer.
    """
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return function.apply(x, weight, bias, feedback, *args)
    dtype = torch.get_autocast_dtype(device_type)
    if casts is None:
        tensors = [_autocast_cast(value, dtype) for value in (x, weight, bias, feedback)]
    else:
        tensors = [_autocast_cast(x, dtype)] + [
            casts.cast(slot, value, dtype) if isinstance(value, Tensor) else value
            for slot, value in (("weight", weight), ("bias", bias), ("feedback", feedback))
        ]
    with torch.autocast(device_type, enabled=False):
        return function.apply(*tensors, *args)
