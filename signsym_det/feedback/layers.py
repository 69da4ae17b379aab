"""FeedbackConv2d / FeedbackLinear: drop-in layers whose backward uses a rule's B for dL/dx.

Forward is the plain layer's (bit for bit); in training with grad enabled it goes through the
Functions of :mod:`.function`, otherwise (eval under no_grad, nothing needing grad) it is the
plain op at the plain cost. FeedbackConv2d also applies ``self.norm`` then ``self.activation``
when present, as detectron2's Conv2d does, so it replaces either class.

Rule state on a layer: ``rule`` (canonical name), ``scale``, ``feedback_seed``, the tensor
``feedback_weight`` (buffer or parameter, rules with state) and the int64 buffer
``feedback_step`` (rules with per-step noise; advanced by :func:`advance_feedback_step`).

Fixed feedback (``state="buffer"``: fa, frsf) is by default *regenerated*, not stored: the layer
keeps only its seed and redraws the same tensor from it on W's device whenever it is needed
(once per iteration), which saves one W-sized tensor per layer. ``layer.feedback_weight`` and
``state_dict()`` read the same in both modes, and loading a tensor that the seed does not
reproduce (e.g. a backbone pretrained under other layer names) makes the layer store it.
``fixed_feedback="store"`` keeps the tensor in a buffer instead (no draw per iteration).

Cost: a B made from W (sign symmetry, frsf, brsf) is made at most once per layer per
iteration, in the first backward that needs it, and shared by every call of the layer in that
iteration (RetinaNet's head runs each conv once per FPN level): a :class:`LazyFeedback` per
layer, valid while W, the rule state, the scale and the step are unchanged, and emptied as
soon as the last backward of those calls has run, so B is never held between iterations.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .function import (
    AutocastCasts,
    FeedbackConv2dFunction,
    FeedbackLinearFunction,
    apply_autocast_aware,
)
from .rules import FeedbackRule, check_scale, derive_seed, get_rule, scale_factor

_FEEDBACK_ATTRIBUTES = (
    "rule",
    "scale",
    "feedback_seed",
    "_plain_class",
    "_noise_cache",
    "_step_cache",
    "_lazy_feedback",
    "_autocast_casts",
    "_alignment_observer",
    "_redraw",
)
FIXED_FEEDBACK = ("regenerate", "store")
_FEEDBACK_TENSORS = ("feedback_weight", "feedback_step")


def check_fixed_feedback(value: str) -> str:
    """Return ``value`` if it is one of :data:`FIXED_FEEDBACK`."""
    if value not in FIXED_FEEDBACK:
        raise ValueError(f"invalid fixed_feedback {value!r}; valid: {', '.join(FIXED_FEEDBACK)}")
    return value


def _version_key(tensor: Optional[Tensor]):
    """What identifies a tensor's current values: (object, in-place version), or None."""
    return None if tensor is None else (weakref.ref(tensor), tensor._version)


def _same_version(key, tensor: Optional[Tensor]) -> bool:
    if key is None or tensor is None:
        return key is None and tensor is None
    return key[0]() is tensor and key[1] == tensor._version


class LazyFeedback:
    """B of one layer for one iteration: made on first use, shared, dropped after last use.

    The layer hands the same object to every forward call made while its W, rule, rule state,
    scale and step are unchanged (:meth:`matches`); each call counts as one pending use. Backward
    calls it with the weight it saved (``self(weight)``: made once, then reused while dtype
    and device match) and then :meth:`release`: when no use is pending, B is dropped. A
    backward that never runs only keeps B until the layer makes its next LazyFeedback.
    Copies and pickles are empty (a copied layer makes its own).
    """

    __slots__ = ("make", "weight_key", "state_key", "spec", "pending", "value")

    def __init__(self, make=None, weight=None, state=None, spec=None):
        self.make = make
        self.weight_key = _version_key(weight)
        self.state_key = _version_key(state)
        self.spec = spec
        self.pending = 0
        self.value: Optional[Tensor] = None

    def matches(self, weight: Tensor, state: Optional[Tensor], spec: tuple) -> bool:
        """True iff B made for this W, state and (rule, scale, step) would be this one's."""
        return (
            self.make is not None
            and _same_version(self.weight_key, weight)
            and _same_version(self.state_key, state)
            and self.spec == spec
        )

    def acquire(self) -> "LazyFeedback":
        """Count one more forward call whose backward will use B."""
        self.pending += 1
        return self

    def __call__(self, weight: Tensor) -> Tensor:
        value = self.value
        if value is None or value.dtype != weight.dtype or value.device != weight.device:
            value = self.value = self.make(weight)
        return value

    def release(self) -> None:
        """One use is over; drop B once none is pending."""
        self.pending -= 1
        if self.pending <= 0:
            self.value = None

    def __reduce__(self):
        return (LazyFeedback, ())

    def __deepcopy__(self, memo):
        return LazyFeedback()


class FeedbackLayer:
    """Rule state and feedback matrix shared by FeedbackConv2d and FeedbackLinear."""

    _alignment_observer: Optional[Callable[[Tensor, Tensor], None]] = None

    def attach_feedback(
        self,
        rule: str,
        scale=None,
        seed: int = 0,
        plain_class=None,
        fixed_feedback: str = "regenerate",
    ) -> None:
        """Set the rule, drawing its state from ``seed``; strip() restores ``plain_class``.

        ``fixed_feedback``: ``"regenerate"`` (a ``state="buffer"`` rule's tensor is redrawn
        from the seed when needed) or ``"store"`` (kept in the buffer ``feedback_weight``).
        """
        record = get_rule(rule)
        check_fixed_feedback(fixed_feedback)
        self.rule = record.name
        self.scale = (
            None
            if record.scale_at is None
            else check_scale(record.default_scale if scale is None else scale)
        )
        self.feedback_seed = int(seed)
        self._plain_class = plain_class
        self._noise_cache = None
        self._step_cache = None
        self._redraw = None
        self._lazy_feedback = LazyFeedback()
        self._autocast_casts = AutocastCasts()
        weight = self.weight.detach()
        if record.init_state is not None:
            draw_scale = scale_factor(self.scale, weight) if record.scale_at == "draw" else None
            draw_scale = None if draw_scale is None else float(draw_scale)
            if record.state == "buffer" and fixed_feedback == "regenerate":
                self._redraw = (draw_scale,)
            else:
                state = self._draw_state(record, draw_scale, torch.device("cpu"))
                state = state.to(device=weight.device, dtype=weight.dtype)
                if record.state == "parameter":
                    self.register_parameter("feedback_weight", nn.Parameter(state))
                else:
                    self.register_buffer("feedback_weight", state)
        if record.noise_per_step:
            self.register_buffer(
                "feedback_step", torch.zeros((), dtype=torch.int64, device=weight.device)
            )

    def _draw_state(self, record: FeedbackRule, draw_scale, device: torch.device) -> Tensor:
        """The rule's state drawn from ``feedback_seed`` by a generator on ``device``."""
        generator = torch.Generator(device=device).manual_seed(self.feedback_seed)
        return record.init_state(self.weight.detach(), draw_scale, generator)

    def _redrawn_state(self) -> Tensor:
        """The fixed feedback tensor of a regenerating layer, drawn anew on W's device."""
        weight = self.weight
        state = self._draw_state(get_rule(self.rule), self._redraw[0], weight.device)
        return state.to(device=weight.device, dtype=weight.dtype)

    def _feedback_state(self) -> Optional[Tensor]:
        """``feedback_weight`` (stored or redrawn), or None for rules without state."""
        if self.__dict__.get("_redraw") is not None:
            return self._redrawn_state()
        return self._parameters.get("feedback_weight", self._buffers.get("feedback_weight"))

    def __getattr__(self, name: str):
        if name == "feedback_weight" and self.__dict__.get("_redraw") is not None:
            return self._redrawn_state()
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.__dict__.get("_redraw") is not None:
            destination[prefix + "feedback_weight"] = self._redrawn_state()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, *rest):
        """A regenerating layer keeps regenerating if the loaded tensor is what its seed
        draws, and otherwise stores the loaded tensor from now on."""
        key = prefix + "feedback_weight"
        if self.__dict__.get("_redraw") is not None:
            if key not in state_dict:
                missing.append(key)
            elif self._is_redrawn(state_dict[key]):
                state_dict.pop(key)
            else:  # a tensor the seed does not make (or the wrong shape): keep it in a buffer
                state = self._redrawn_state()  # the shape check is super()'s
                self._redraw = None
                self.register_buffer("feedback_weight", state)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, *rest)

    def _is_redrawn(self, value: Tensor) -> bool:
        """True iff ``value`` is exactly the tensor this layer's seed draws."""
        if not isinstance(value, Tensor) or value.shape != self.weight.shape:
            return False
        with torch.no_grad():
            state = self._redrawn_state()
            return torch.equal(value.detach().to(device=state.device, dtype=state.dtype), state)

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

    def feedback_matrix(self) -> Tensor:
        """The B the backward pass uses now (detached)."""
        record = get_rule(self.rule)
        step = self.current_step() if record.noise_per_step else None
        with torch.no_grad():
            return self._make_feedback(record, self.weight.detach(), step).detach()

    def current_step(self) -> int:
        """The training iteration of ``feedback_step`` (host copy; reads the device on change)."""
        step = self.feedback_step
        key = (step.device, step.data_ptr(), step._version)
        if self._step_cache is None or self._step_cache[0] != key:
            self._step_cache = (key, int(step))
        return self._step_cache[1]

    def advance_step(self) -> None:
        """feedback_step += 1 without a device read."""
        new_step = self.current_step() + 1
        with torch.no_grad():
            self.feedback_step.add_(1)
        step = self.feedback_step
        self._step_cache = ((step.device, step.data_ptr(), step._version), new_step)

    def _noise(self, step: int, device: torch.device, keep: bool = False) -> Tensor:
        """This step's N(0, 1) of W's shape, seeded by (feedback_seed, step).

        ``keep``: cache it for the step (a B made in forward, once per call, needs it each
        time); otherwise it is drawn anew, as a lazily made B needs it once per iteration and
        W-sized noise held between iterations would cost as much memory as W.
        """
        cache = self._noise_cache
        if cache is not None and cache[0] == step and cache[1].device == device:
            return cache[1]
        generator = torch.Generator(device=device).manual_seed(
            derive_seed(self.feedback_seed, step)
        )
        noise = torch.randn(
            self.weight.shape, generator=generator, device=device, dtype=torch.float32
        )
        self._noise_cache = (step, noise) if keep else None
        return noise

    def _make_feedback(self, record: FeedbackRule, weight: Tensor, step: Optional[int]) -> Tensor:
        state = self._feedback_state()
        scale = scale_factor(self.scale, weight) if record.scale_at == "backward" else None
        keep = record.state == "parameter"
        noise = None if step is None else self._noise(step, weight.device, keep)
        feedback = record.feedback(weight, state, scale, noise)
        return feedback.to(weight.dtype)

    def _feedback_source(self) -> Union[Tensor, LazyFeedback]:
        """B for the Function: a trainable tensor, or this iteration's :class:`LazyFeedback`."""
        record = get_rule(self.rule)
        step = self.current_step() if record.noise_per_step else None
        if record.state == "parameter":
            feedback = self._make_feedback(record, self.weight.detach(), step)
            return feedback if self.weight.requires_grad else feedback.detach()
        weight = self.weight
        state = self._buffers.get("feedback_weight")  # a regenerated one is fixed by the spec
        spec = (record.name, self.scale, step)
        lazy = self.__dict__.get("_lazy_feedback") or LazyFeedback()  # older pickles lack it
        if not lazy.matches(weight, state, spec):
            lazy = self._lazy_feedback = LazyFeedback(
                lambda w: self._make_feedback(record, w, step), weight, state, spec
            )
        return lazy.acquire()

    def _needs_feedback(self, x: Tensor) -> bool:
        """True iff autograd will need this layer's backward with B."""
        if not torch.is_grad_enabled():
            return False
        if x.requires_grad:
            return True
        state = self._parameters.get("feedback_weight")
        return state is not None and state.requires_grad and self.weight.requires_grad

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
            x = apply_autocast_aware(
                FeedbackConv2dFunction,
                x,
                self.weight,
                self.bias,
                self._feedback_source(),
                self._alignment_observer,
                self.stride,
                padding,
                self.dilation,
                self.groups,
                casts=self.__dict__.get("_autocast_casts"),
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
        return apply_autocast_aware(
            FeedbackLinearFunction,
            x,
            self.weight,
            self.bias,
            self._feedback_source(),
            self._alignment_observer,
            casts=self.__dict__.get("_autocast_casts"),
        )

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
