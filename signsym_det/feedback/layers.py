"""FeedbackConv2d / FeedbackLinear: drop-in layers whose backward uses a rule's B for dL/dx.

Forward is the plain layer's (bit for bit); in training with grad enabled it goes through the
Functions of :mod:`.function`, otherwise (eval under no_grad, nothing needing grad) it is the
plain op at the plain cost. FeedbackConv2d also applies ``self.norm`` then ``self.activation``
when present, as detectron2's Conv2d does, so it replaces either class.

Rule state on a layer: ``rule`` (canonical name), ``scale``, ``feedback_seed``, the
``feedback_source`` (:mod:`.sources`: where B comes from, how it is made and cached; its
tensor ``feedback_weight`` is a buffer, a parameter, or regenerated from the seed and read with
:meth:`FeedbackLayer.feedback_state`) and the int64 buffer ``feedback_step`` (rules with
per-step noise; advanced by :func:`advance_feedback_step`). ``state_dict()`` holds
``feedback_weight`` whichever way it is kept.

``torch.compile`` traces a converted model in one graph, as the plain one: under compile the
forward hands the Function B as a tensor made from traceable ops (no Python caches, no host
reads of the step), and the step hook of per-step rules runs eagerly before the graph. The
gradient-alignment observer is Python code in backward: set it only in eager steps.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import TensorVersion
from .function import (
    AutocastCasts,
    FeedbackConv2dFunction,
    FeedbackLinearFunction,
    apply_autocast_aware,
)
from .rules import check_scale, get_rule, scale_factor
from .sources import (
    DEFAULT_FIXED_FEEDBACK,
    FeedbackSource,
    attach_source,
    check_fixed_feedback,
)

_FEEDBACK_ATTRIBUTES = (
    "rule",
    "scale",
    "feedback_seed",
    "feedback_source",
    "_plain_class",
    "_step_seen",
    "_autocast_casts",
    "_alignment_observer",
)
_FEEDBACK_TENSORS = ("feedback_weight", "feedback_codes", "feedback_step")


class FeedbackLayer:
    """Rule state and feedback matrix shared by FeedbackConv2d and FeedbackLinear."""

    _alignment_observer: Optional[Callable[[Tensor, Tensor], None]] = None
    feedback_source: FeedbackSource

    def attach_feedback(
        self,
        rule: str,
        scale=None,
        seed: int = 0,
        plain_class=None,
        fixed_feedback: str = DEFAULT_FIXED_FEEDBACK,
    ) -> None:
        """Set the rule, drawing its state from ``seed``; strip() restores ``plain_class``.

        ``fixed_feedback`` (how a ``state="buffer"`` rule's tensor is kept): ``"packed"``
        (4-bit codes of its 16-level rounding, for ``compact_state`` rules), ``"regenerate"``
        (redrawn from the seed when needed) or ``"store"`` (the buffer ``feedback_weight``).
        """
        record = get_rule(rule)
        check_fixed_feedback(fixed_feedback)
        self.rule = record.name
        self.scale = (
            None
            if record.scale_at is None
            else check_scale(record.default_scale if scale is None else scale, allow_auto=False)
        )
        self.feedback_seed = int(seed)
        self._plain_class = plain_class
        self._step_seen = None
        self._autocast_casts = AutocastCasts()
        weight = self.weight.detach()
        draw_scale = None
        if record.scale_at == "draw":
            draw_scale = float(self.feedback_scale(weight))
        self.feedback_source = attach_source(self, record, draw_scale, fixed_feedback)
        if record.noise_per_step:
            self.register_buffer(
                "feedback_step", torch.zeros((), dtype=torch.int64, device=weight.device)
            )

    def feedback_scale(self, weight: Tensor):
        """The rule's factor s for ``weight`` (this layer's W or a copy of it)."""
        return scale_factor(self.scale, weight)

    def feedback_state(self) -> Optional[Tensor]:
        """The rule's state ``feedback_weight`` (stored, trained or drawn anew), or None."""
        return self.feedback_source.state(self)

    def feedback_matrix(self) -> Tensor:
        """The B the backward pass uses now (detached)."""
        with torch.no_grad():
            return self.feedback_source.make(self, self.weight.detach(), self.noise_step()).detach()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        self.feedback_source.save(self, destination, prefix)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, *rest):
        self.feedback_source.load(self, state_dict, prefix, missing)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, *rest)

    def detach_feedback(self) -> nn.Module:
        """Drop all rule state and return to the plain class (same object, same weights)."""
        for name in _FEEDBACK_TENSORS:
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
        plain_class = self._plain_class
        for name in _FEEDBACK_ATTRIBUTES:
            self.__dict__.pop(name, None)
        self.__class__ = plain_class
        return self

    def noise_step(self) -> Union[int, Tensor, None]:
        """The step whose noise B uses now, or None if the rule has no per-step noise.

        Under torch.compile it is the tensor ``feedback_step`` itself (no host read).
        """
        if not get_rule(self.rule).noise_per_step:
            return None
        return self.feedback_step if torch.compiler.is_compiling() else self.current_step()

    def current_step(self) -> int:
        """The training iteration of ``feedback_step`` (host copy; reads the device on change)."""
        step = self.feedback_step
        seen = self._step_seen
        if seen is None or not seen[0].matches(step):
            seen = self._step_seen = (TensorVersion(step), int(step))
        return seen[1]

    def advance_step(self) -> None:
        """feedback_step += 1 without a device read."""
        new_step = self.current_step() + 1
        with torch.no_grad():
            self.feedback_step.add_(1)
        self._step_seen = (TensorVersion(self.feedback_step), new_step)

    def _apply_feedback(self, function, x: Tensor, *args) -> Tensor:
        """``function.apply(x, W, b, B, observer, *args)`` (autocast-aware): the rule's op."""
        return apply_autocast_aware(
            function,
            x,
            self.weight,
            self.bias,
            self.feedback_source.for_function(self),
            self._alignment_observer,
            *args,
            casts=None if torch.compiler.is_compiling() else self._autocast_casts,
        )

    def _needs_feedback(self, x: Tensor) -> bool:
        """True iff autograd will need this layer's backward with B."""
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or self.feedback_source.trains(self)

    def _feedback_repr(self) -> str:
        scale = "" if self.scale is None else f", scale={self.scale}"
        return f", rule={self.rule}{scale}"


class FeedbackConv2d(FeedbackLayer, nn.Conv2d):
    """nn.Conv2d (or detectron2 Conv2d: conv -> norm -> activation) with dL/dx = conv_t(g, B)."""

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
        rule: str = "sign_symmetry",
        scale=None,
        seed: int = 0,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        self.attach_feedback(rule, scale, seed, plain_class=nn.Conv2d)

    def forward(self, x: Tensor) -> Tensor:
        if self._needs_feedback(x):
            x, padding = self._explicitly_padded(x)
            x = self._apply_feedback(
                FeedbackConv2dFunction, x, self.stride, padding, self.dilation, self.groups
            )
        else:
            x = self._conv_forward(x, self.weight, self.bias)
        norm = getattr(self, "norm", None)
        if norm is not None:
            x = norm(x)
        activation = getattr(self, "activation", None)
        if activation is not None:
            x = activation(x)
        return x

    def _explicitly_padded(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(x, symmetric int padding) equivalent to this layer's padding / padding_mode."""
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return x, (0, 0)
        if not isinstance(self.padding, str):
            return x, self.padding
        left_w, right_w, left_h, right_h = self._reversed_padding_repeated_twice
        if (left_w, left_h) != (right_w, right_h):  # "same" with an even kernel: extra at the end
            x = F.pad(x, (0, right_w - left_w, 0, right_h - left_h))
        return x, (left_h, left_w)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._feedback_repr()


class FeedbackLinear(FeedbackLayer, nn.Linear):
    """nn.Linear with dL/dx = g @ B (any number of leading dims)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        rule: str = "sign_symmetry",
        scale=None,
        seed: int = 0,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.attach_feedback(rule, scale, seed, plain_class=nn.Linear)

    def forward(self, x: Tensor) -> Tensor:
        if not self._needs_feedback(x):
            return F.linear(x, self.weight, self.bias)
        return self._apply_feedback(FeedbackLinearFunction, x)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._feedback_repr()


def feedback_layers(module: nn.Module) -> Iterator[tuple[str, FeedbackLayer]]:
    """(qualified name, layer) for every feedback layer in the tree."""
    for name, layer in module.named_modules():
        if isinstance(layer, FeedbackLayer):
            yield name, layer


def advance_feedback_step(module: nn.Module) -> None:
    """Start a new training iteration for every per-step rule (brsf) in the tree."""
    for _, layer in feedback_layers(module):
        if "feedback_step" in layer._buffers:
            layer.advance_step()


@torch.compiler.disable  # eager even in a compiled model: one host-side step counter
def _advance_when_training(module: nn.Module, args) -> None:
    if module.training:
        advance_feedback_step(module)


def remove_step_hooks(module: nn.Module) -> None:
    """Remove the step hooks of :func:`install_step_hook` from every module in the tree."""
    for child in module.modules():
        hooks = child._forward_pre_hooks
        for key in [key for key, hook in hooks.items() if hook is _advance_when_training]:
            del hooks[key]


def install_step_hook(module: nn.Module) -> None:
    """One root forward in training = one iteration: advance per-step rules before it.

    Replaces such hooks further down the tree (a root forward already advances them). Added
    only if the tree has a per-step rule.
    """
    remove_step_hooks(module)
    if any("feedback_step" in layer._buffers for _, layer in feedback_layers(module)):
        module.register_forward_pre_hook(_advance_when_training)
