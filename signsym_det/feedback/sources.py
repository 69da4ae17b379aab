"""Where a feedback layer's B comes from: one source object per kind, owning how B is made.

A rule (:mod:`.rules`) says how B follows from W, its state and this step's noise; the source
says where that state lives and how B is cached:

* :class:`FromWeight` (bp, sign_symmetry, brsf): no state; B from the current W.
* :class:`StoredFixed` (fa, frsf with ``fixed_feedback="store"``): the state drawn once from
  the layer's seed and kept in the buffer ``feedback_weight``.
* :class:`RegeneratedFixed` (fa, frsf by default): the same state, not kept but drawn anew
  from the seed on W's device whenever it is needed; ``state_dict()`` still holds it, and a
  loaded tensor the seed does not draw makes the layer switch to :class:`StoredFixed`.
* :class:`Trained` (kolen_pollack): the state is the parameter ``feedback_weight``.

The first three make B lazily in backward, at most once per layer per iteration, shared by
every call of the layer and dropped after the last backward (a :class:`.cache.LazyFeedback`);
a trained B is the parameter itself (made in forward, so autograd gives it dL/dW).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .cache import LazyFeedback
from .rules import FeedbackRule, derive_seed, get_rule

STATE = "feedback_weight"
FIXED_FEEDBACK = ("regenerate", "store")


def check_fixed_feedback(value: str) -> str:
    """Return ``value`` if it is one of :data:`FIXED_FEEDBACK`."""
    if value not in FIXED_FEEDBACK:
        raise ValueError(f"invalid fixed_feedback {value!r}; valid: {', '.join(FIXED_FEEDBACK)}")
    return value


def draw_state(layer: nn.Module, draw_scale: Optional[float], device: torch.device) -> Tensor:
    """The rule's state, drawn by a generator on ``device`` seeded with ``feedback_seed``."""
    generator = torch.Generator(device=device).manual_seed(layer.feedback_seed)
    return get_rule(layer.rule).init_state(layer.weight.detach(), draw_scale, generator)


def step_noise(layer: nn.Module, step: int, device: torch.device) -> Tensor:
    """Step ``step``'s float32 N(0, 1) of W's shape, seeded by (``feedback_seed``, step)."""
    generator = torch.Generator(device=device).manual_seed(derive_seed(layer.feedback_seed, step))
    return torch.randn(layer.weight.shape, generator=generator, device=device, dtype=torch.float32)


class FeedbackSource:
    """How one layer's rule state is kept and its B made; one instance per layer.

    B = ``rule.feedback(W, state(), s(W) if the rule scales at backward, noise of the step)``,
    in W's dtype.
    """

    def state(self, layer: nn.Module) -> Optional[Tensor]:
        """The rule's state tensor (``feedback_weight``), or None for rules without one."""
        return None

    def make(self, layer: nn.Module, weight: Tensor, step: Optional[int]) -> Tensor:
        """B for ``weight`` (W or its saved copy) at ``step`` (None: no per-step noise)."""
        rule = get_rule(layer.rule)
        state = self.state(layer)
        scale = layer.feedback_scale(weight) if rule.scale_at == "backward" else None
        noise = None if step is None else self.noise(layer, step, weight.device)
        return rule.feedback(weight, state, scale, noise).to(weight.dtype)

    def noise(self, layer: nn.Module, step: int, device: torch.device) -> Tensor:
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
    """A fixed or W-derived B: made in the first backward of an iteration, then shared."""

    def __init__(self):
        self.lazy = LazyFeedback()

    def inputs(self, layer: nn.Module) -> tuple:
        """The tensors B is made from: it stays valid while they are unchanged."""
        return (layer.weight,)

    def for_function(self, layer: nn.Module) -> LazyFeedback:
        step = layer.noise_step()
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


class RegeneratedFixed(LazySource):
    """A state fixed by the seed, drawn anew on W's device whenever it is needed."""

    def __init__(self, draw_scale: Optional[float]):
        super().__init__()
        self.draw_scale = draw_scale

    def state(self, layer: nn.Module) -> Tensor:
        weight = layer.weight
        state = draw_state(layer, self.draw_scale, weight.device)
        return state.to(device=weight.device, dtype=weight.dtype)

    def save(self, layer: nn.Module, destination: dict, prefix: str) -> None:
        destination[prefix + STATE] = self.state(layer)

    def load(self, layer: nn.Module, state_dict: dict, prefix: str, missing: list) -> None:
        """Keep regenerating if the offered tensor is the seed's draw; else store it."""
        key = prefix + STATE
        if key not in state_dict:
            missing.append(key)
        elif self.draws(layer, state_dict[key]):
            state_dict.pop(key)
        else:  # not the seed's draw (or misshapen: the layer's own load reports that)
            layer.register_buffer(STATE, self.state(layer))
            layer.feedback_source = StoredFixed()

    def draws(self, layer: nn.Module, value) -> bool:
        """True iff ``value`` is exactly the tensor this layer's seed draws."""
        if not isinstance(value, Tensor) or value.shape != layer.weight.shape:
            return False
        with torch.no_grad():
            state = self.state(layer)
            return torch.equal(value.detach().to(device=state.device, dtype=state.dtype), state)


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

    def noise(self, layer: nn.Module, step: int, device: torch.device) -> Tensor:
        """This step's noise, kept for the step: B is made in every forward call."""
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
    """The source of ``rule`` on ``layer``, registering the state it keeps there."""
    if rule.state is None:
        return FromWeight()
    if rule.state == "parameter":
        return Trained.attach(layer, draw_scale)
    if fixed_feedback == "store":
        return StoredFixed.attach(layer, draw_scale)
    return RegeneratedFixed(draw_scale)
