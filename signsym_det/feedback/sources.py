"""Where a feedback layer's B comes from: one source object per kind, owning how B is made.

A rule (:mod:`.rules`) says how B follows from W, its state and this step's noise; the source
says where that state lives and how B is cached:

* :class:`FromWeight` (bp, sign_symmetry, brsf): no state; B from the current W.
* :class:`PackedFixed` (fa, frsf by default): the state drawn once from the layer's seed,
  rounded to 16 levels and kept as 4-bit codes (:mod:`.packed`) in the non-persistent buffer
  ``feedback_codes``: an eighth of W's float32 bytes.
* :class:`StoredFixed` (``fixed_feedback="store"``): the state drawn once from the seed (not
  rounded) and kept in the buffer ``feedback_weight``.
* :class:`RegeneratedFixed` (``fixed_feedback="regenerate"``, and the default of a rule whose
  state is not ``compact``): the same state as stored, not kept but drawn anew from the seed
  on W's device whenever it is needed.
* :class:`Trained` (kolen_pollack): the state is the parameter ``feedback_weight``.

``state_dict()`` holds a fixed state as ``feedback_weight`` whichever way it is kept; a loaded
tensor that is not what the layer's seed gives makes the layer switch to :class:`StoredFixed`.

In eager mode the first three make B lazily in backward, at most once per layer per
iteration, shared by every call of the layer and dropped after the last backward (a
:class:`.cache.LazyFeedback`); a trained B is the parameter itself (made in forward, so
autograd gives it dL/dW). Under ``torch.compile`` every source makes B as a tensor in forward
from traceable ops (seeded draws are the opaque custom ops ``signsym_det::seeded_state`` and
``signsym_det::step_noise``); the compiler shares, fuses and recomputes it in backward.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .cache import LazyFeedback
from .packed import Packing, pack, unpack
from .rules import FeedbackRule, derive_seed, get_rule

STATE = "feedback_weight"
CODES = "feedback_codes"
FIXED_FEEDBACK = ("packed", "regenerate", "store")
DEFAULT_FIXED_FEEDBACK = "packed"
Step = Union[int, Tensor, None]


def check_fixed_feedback(value: str) -> str:
    """Return ``value`` if it is one of :data:`FIXED_FEEDBACK`."""
    if value not in FIXED_FEEDBACK:
        raise ValueError(f"invalid fixed_feedback {value!r}; valid: {', '.join(FIXED_FEEDBACK)}")
    return value


def _draw(rule: str, seed: int, weight: Tensor, draw_scale: Optional[float], device) -> Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    return get_rule(rule).init_state(weight.detach(), draw_scale, generator)


def _noise(seed: int, step: int, shape, device) -> Tensor:
    generator = torch.Generator(device=device).manual_seed(derive_seed(seed, step))
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


@torch.library.custom_op("signsym_det::seeded_state", mutates_args=())
def seeded_state(weight: Tensor, rule: str, seed: int, draw_scale: Optional[float]) -> Tensor:
    """``rule``'s state for ``weight``, drawn on W's device from ``seed`` (opaque to compile)."""
    return _draw(rule, seed, weight, draw_scale, weight.device)


@seeded_state.register_fake
def _(weight, rule, seed, draw_scale):
    return weight.new_empty(weight.shape, dtype=torch.float32)


@torch.library.custom_op("signsym_det::step_noise", mutates_args=())
def step_noise_op(weight: Tensor, step: Tensor, seed: int) -> Tensor:
    """:func:`step_noise` for the step held in the tensor ``step`` (opaque to compile)."""
    return _noise(seed, int(step), weight.shape, weight.device)


@step_noise_op.register_fake
def _(weight, step, seed):
    return weight.new_empty(weight.shape, dtype=torch.float32)


def draw_state(layer: nn.Module, draw_scale: Optional[float], device: torch.device) -> Tensor:
    """The rule's state, drawn by a generator on ``device`` seeded with ``feedback_seed``."""
    return _draw(layer.rule, layer.feedback_seed, layer.weight, draw_scale, device)


def step_noise(layer: nn.Module, step: Union[int, Tensor], device: torch.device) -> Tensor:
    """Step ``step``'s float32 N(0, 1) of W's shape, seeded by (``feedback_seed``, step).

    ``step`` is an int, or (under torch.compile) the 0-dim tensor holding it.
    """
    if isinstance(step, Tensor):
        return step_noise_op(layer.weight.detach(), step, layer.feedback_seed)
    return _noise(layer.feedback_seed, step, layer.weight.shape, device)


class FeedbackSource:
    """How one layer's rule state is kept and its B made; one instance per layer.

    B = ``rule.feedback(W, state(), s(W) if the rule scales at backward, noise of the step)``,
    in W's dtype.
    """

    def state(self, layer: nn.Module) -> Optional[Tensor]:
        """The rule's state tensor (``feedback_weight``), or None for rules without one."""
        return None

    def make(self, layer: nn.Module, weight: Tensor, step: Step) -> Tensor:
        """B for ``weight`` (W or its saved copy) at ``step`` (None: no per-step noise)."""
        rule = get_rule(layer.rule)
        state = self.state(layer)
        scale = layer.feedback_scale(weight) if rule.scale_at == "backward" else None
        noise = None if step is None else self.noise(layer, step, weight.device)
        return rule.feedback(weight, state, scale, noise).to(weight.dtype)

    def noise(self, layer: nn.Module, step: Union[int, Tensor], device) -> Tensor:
        """This step's noise: drawn anew (a lazily made B needs it once per iteration)."""
        return step_noise(layer, step, device)

    def for_function(self, layer: nn.Module) -> Union[Tensor, LazyFeedback]:
        """B as the autograd Function takes it: a tensor, or this iteration's LazyFeedback."""
        raise NotImplementedError

    def trains(self, layer: nn.Module) -> bool:
        """True iff B itself receives a gradient (so backward runs even if x needs none)."""
        return False

    def save(self, layer: nn.Module, destination: dict, prefix: str) -> None:
        """Add to ``destination`` what ``state_dict()`` holds beyond registered tensors."""

    def load(self, layer: nn.Module, state_dict: dict, prefix: str, missing: list) -> None:
        """Take from ``state_dict`` what :meth:`save` added (before the registered tensors)."""


class LazySource(FeedbackSource):
    """A fixed or W-derived B: made in the first backward of an iteration, then shared.

    Under torch.compile, B is made in forward instead (the compiler shares and fuses it).
    """

    def __init__(self):
        self.lazy = LazyFeedback()

    def inputs(self, layer: nn.Module) -> tuple:
        """The tensors B is made from: it stays valid while they are unchanged."""
        return (layer.weight,)

    def for_function(self, layer: nn.Module) -> Union[Tensor, LazyFeedback]:
        step = layer.noise_step()
        if torch.compiler.is_compiling():
            return self.make(layer, layer.weight.detach(), step)
        inputs, spec = self.inputs(layer), (layer.rule, layer.scale, step)
        if not self.lazy.matches(inputs, spec):
            self.lazy = LazyFeedback(lambda weight: self.make(layer, weight, step), inputs, spec)
        return self.lazy.acquire()


class FromWeight(LazySource):
    """No state: B from the current W (bp, sign symmetry; brsf with its per-step noise)."""


class StoredFixed(LazySource):
    """A state fixed by the seed, kept in the buffer ``feedback_weight``."""

    @classmethod
    def attach(cls, layer: nn.Module, draw_scale: Optional[float]) -> "StoredFixed":
        """Draw the state (CPU generator) and register it on ``layer``."""
        weight = layer.weight.detach()
        state = draw_state(layer, draw_scale, torch.device("cpu"))
        layer.register_buffer(STATE, state.to(device=weight.device, dtype=weight.dtype))
        return cls()

    def state(self, layer: nn.Module) -> Tensor:
        return layer._buffers[STATE]

    def inputs(self, layer: nn.Module) -> tuple:
        return (layer.weight, self.state(layer))


class SeededFixed(LazySource):
    """A state fixed by the seed and not registered as drawn: ``state_dict()`` still holds it."""

    def save(self, layer: nn.Module, destination: dict, prefix: str) -> None:
        destination[prefix + STATE] = self.state(layer)

    def load(self, layer: nn.Module, state_dict: dict, prefix: str, missing: list) -> None:
        """Keep this source if the offered tensor is what it gives; else store the tensor."""
        key = prefix + STATE
        if key not in state_dict:
            missing.append(key)
        elif self.gives(layer, state_dict[key]):
            state_dict.pop(key)
        else:  # not this source's state (or misshapen: the layer's own load reports that)
            layer.register_buffer(STATE, self.state(layer))
            layer._buffers.pop(CODES, None)
            layer.feedback_source = StoredFixed()

    def gives(self, layer: nn.Module, value) -> bool:
        """True iff ``value`` is exactly this source's state."""
        if not isinstance(value, Tensor) or value.shape != layer.weight.shape:
            return False
        with torch.no_grad():
            state = self.state(layer)
            return torch.equal(value.detach().to(device=state.device, dtype=state.dtype), state)


class RegeneratedFixed(SeededFixed):
    """A state fixed by the seed, drawn anew on W's device whenever it is needed."""

    def __init__(self, draw_scale: Optional[float]):
        super().__init__()
        self.draw_scale = draw_scale

    def state(self, layer: nn.Module) -> Tensor:
        weight = layer.weight
        if torch.compiler.is_compiling():
            state = seeded_state(weight.detach(), layer.rule, layer.feedback_seed, self.draw_scale)
        else:
            state = draw_state(layer, self.draw_scale, weight.device)
        return state.to(device=weight.device, dtype=weight.dtype)


class PackedFixed(SeededFixed):
    """A state drawn once from the seed (CPU generator), kept as 4-bit codes (:mod:`.packed`)
    in the non-persistent buffer ``feedback_codes``; its values are the codes' levels."""

    def __init__(self, packing: Packing):
        super().__init__()
        self.packing = packing

    @classmethod
    def attach(cls, layer: nn.Module, draw_scale: Optional[float]) -> "PackedFixed":
        """Draw the state, pack it and register the codes on ``layer``."""
        codes, packing = pack(draw_state(layer, draw_scale, torch.device("cpu")))
        layer.register_buffer(CODES, codes.to(layer.weight.device), persistent=False)
        return cls(packing)

    def state(self, layer: nn.Module) -> Tensor:
        weight = layer.weight
        return unpack(layer._buffers[CODES], self.packing, weight.shape).to(weight.dtype)

    def inputs(self, layer: nn.Module) -> tuple:
        return (layer.weight, layer._buffers[CODES])


class Trained(FeedbackSource):
    """A state trained with W: the parameter ``feedback_weight`` (Kolen-Pollack)."""

    def __init__(self):
        self.step_noise: Optional[tuple[int, Tensor]] = None

    @classmethod
    def attach(cls, layer: nn.Module, draw_scale: Optional[float]) -> "Trained":
        """Draw the initial state (CPU generator) and register it as a parameter."""
        weight = layer.weight.detach()
        state = draw_state(layer, draw_scale, torch.device("cpu"))
        state = state.to(device=weight.device, dtype=weight.dtype)
        layer.register_parameter(STATE, nn.Parameter(state))
        return cls()

    def state(self, layer: nn.Module) -> Tensor:
        return layer._parameters[STATE]

    def noise(self, layer: nn.Module, step: Union[int, Tensor], device) -> Tensor:
        """This step's noise, kept for the step: B is made in every forward call."""
        if isinstance(step, Tensor):  # under torch.compile: the compiler shares it
            return step_noise(layer, step, device)
        cached = self.step_noise
        if cached is None or cached[0] != step or cached[1].device != device:
            self.step_noise = cached = (step, step_noise(layer, step, device))
        return cached[1]

    def for_function(self, layer: nn.Module) -> Tensor:
        feedback = self.make(layer, layer.weight.detach(), layer.noise_step())
        return feedback if layer.weight.requires_grad else feedback.detach()

    def trains(self, layer: nn.Module) -> bool:
        return self.state(layer).requires_grad and layer.weight.requires_grad


def attach_source(
    layer: nn.Module, rule: FeedbackRule, draw_scale: Optional[float], fixed_feedback: str
) -> FeedbackSource:
    """The source of ``rule`` on ``layer``, registering the state it keeps there.

    ``fixed_feedback`` (:data:`FIXED_FEEDBACK`) says how a ``state="buffer"`` rule's state is
    kept; ``"packed"`` falls back to ``"regenerate"`` for a rule whose state is not
    ``compact_state``.
    """
    if rule.state is None:
        return FromWeight()
    if rule.state == "parameter":
        return Trained.attach(layer, draw_scale)
    if fixed_feedback == "store":
        return StoredFixed.attach(layer, draw_scale)
    if fixed_feedback == "packed" and rule.compact_state:
        return PackedFixed.attach(layer, draw_scale)
    return RegeneratedFixed(draw_scale)
