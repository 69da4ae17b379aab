"""The learning-rule registry: how each rule makes the feedback matrix B.

A rule acts in one place only: dL/dx = conv_transpose(g, B) (Linear: g @ B), where backprop
uses B = W. A rule is data (a :class:`FeedbackRule` record), not a class, so users can add
rules with :func:`register_rule` without touching the library.

Scales ``s`` (:data:`SCALES`, or a positive float):

* ``"xiao"``: conv ``sqrt(2 / (kh * kw * C_out))`` (He fan-out std), Linear ``1 / sqrt(in)``;
* ``"unit"``: ``1`` (Liao et al.'s bare sign);
* ``"weight_mean"``: ``mean|W|``; ``"weight_std"``: population ``std(W)``.

:data:`AUTO` (``"auto"``) is a scale spec, not a scale: ``convert`` resolves it per layer to
``"xiao"`` or ``"weight_std"`` (see :mod:`.auto_scale`), so a layer always holds a scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import Tensor

SCALES = ("xiao", "unit", "weight_mean", "weight_std")
#: The scale spec convert() resolves per layer from the module tree (never a layer's scale).
AUTO = "auto"
Scale = Union[str, float]

STATE_KINDS = ("buffer", "parameter")
SCALE_TIMES = ("draw", "backward")
#: The rule value meaning "no rule: leave the layer plain" (reserved, never a rule's name).
PLAIN = "none"
#: The rule whose B is W: what a plain layer's backward computes (records name plain layers so).
BACKPROP = "bp"


@dataclass(frozen=True)
class FeedbackRule:
    """One learning rule, as data.

    ``feedback(weight, state, scale, noise) -> B`` makes B (same shape as ``weight``) where
    ``state`` is the layer's ``feedback_weight`` (or None), ``scale`` the evaluated factor s
    (or None) and ``noise`` this iteration's N(0, 1) draw of W's shape (or None).

    Attributes:
        feedback: the function above; it must not modify its arguments.
        state: None, ``"buffer"`` (fixed tensor, saved with the model) or ``"parameter"``
            (trained: it receives exactly dL/dW, as in Kolen-Pollack).
        init_state: ``init_state(weight, scale, generator) -> Tensor`` draws ``state`` from a
            seeded generator, on the generator's device; required iff ``state`` is set. It
            must be a pure function of its arguments: a ``"buffer"`` state is redrawn from the
            same seed whenever it is needed unless the layer stores it (``fixed_feedback``).
        compact_state: the ``"buffer"`` state is a Gaussian-shaped draw that may be kept
            rounded to 16 levels, 4 bits a value (``fixed_feedback="packed"``, the default;
            see :mod:`.packed`); otherwise "packed" keeps regenerating it from the seed.
        noise_per_step: draw ``noise`` anew once per training iteration (see
            ``advance_feedback_step``); identical in every process for the same seed.
        scale_at: ``"draw"``: s is evaluated from W when ``state`` is drawn and passed to
            ``init_state``; ``"backward"``: s is evaluated from the current W whenever B is
            made and passed to ``feedback``; None: the rule has no scale (it is ignored).
        default_scale: the scale used when the caller gives none.
        description: one line for reports and docs.
        name: canonical name, filled in by :func:`register_rule`.
    """

    feedback: Callable[..., Tensor]
    state: Optional[str] = None
    init_state: Optional[Callable[[Tensor, Optional[float], torch.Generator], Tensor]] = None
    compact_state: bool = False
    noise_per_step: bool = False
    scale_at: Optional[str] = None
    default_scale: Scale = "xiao"
    description: str = ""
    name: str = ""

    def __post_init__(self):
        if not callable(self.feedback):
            raise ValueError(f"FeedbackRule.feedback must be callable, got {self.feedback!r}")
        if self.state not in (None, *STATE_KINDS):
            raise ValueError(f"FeedbackRule.state {self.state!r} is not one of None, {STATE_KINDS}")
        if (self.state is None) != (self.init_state is None):
            raise ValueError("FeedbackRule needs init_state exactly when it has a state")
        if self.compact_state and self.state != "buffer":
            raise ValueError("FeedbackRule.compact_state needs state='buffer'")
        if self.scale_at not in (None, *SCALE_TIMES):
            raise ValueError(
                f"FeedbackRule.scale_at {self.scale_at!r} is not one of None, {SCALE_TIMES}"
            )
        if self.scale_at == "draw" and self.init_state is None:
            raise ValueError("FeedbackRule with scale_at='draw' needs init_state")
        check_scale(self.default_scale, allow_auto=False)


_RULES: dict[str, FeedbackRule] = {}
_ALIASES: dict[str, str] = {}


def available_rules() -> list[str]:
    """Sorted canonical names of all registered rules."""
    return sorted(_RULES)


def get_rule(name: str) -> FeedbackRule:
    """The rule registered under ``name`` or one of its aliases (case-insensitive)."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key not in _RULES:
        aliases = ", ".join(f"{alias}->{target}" for alias, target in sorted(_ALIASES.items()))
        raise ValueError(
            f"unknown feedback rule {name!r}; valid rules: {', '.join(available_rules())}"
            f" (aliases: {aliases})"
        )
    return _RULES[key]


def register_rule(name: str, rule: FeedbackRule, *, aliases=()) -> None:
    """Register ``rule`` under the lower-case identifier ``name`` (plus ``aliases``)."""
    if not isinstance(rule, FeedbackRule):
        raise ValueError(f"register_rule needs a FeedbackRule, got {type(rule).__name__}")
    names = [name, *aliases]
    for new in names:
        if not (isinstance(new, str) and new.isidentifier() and new == new.lower()):
            raise ValueError(f"rule name {new!r} must be a lower-case identifier")
        if new in _RULES or new in _ALIASES or new == PLAIN:
            raise ValueError(f"rule name {new!r} is already taken (or reserved)")
    if len(set(names)) != len(names):
        raise ValueError(f"rule names repeat: {names}")
    _RULES[name] = dataclasses.replace(rule, name=name)
    _ALIASES.update({alias: name for alias in aliases})


def check_scale(scale, *, allow_auto: bool = True) -> Scale:
    """``scale`` if it is one of :data:`SCALES` (or :data:`AUTO`, if ``allow_auto``), else as
    a positive finite float (also when written as a string, as YAML configs hold it: "0.5")."""
    if isinstance(scale, str) and (scale in SCALES or (allow_auto and scale == AUTO)):
        return scale
    number = None
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        number = float(scale)
    elif isinstance(scale, str):
        try:
            number = float(scale)
        except ValueError:
            pass
    if number is not None and math.isfinite(number) and number > 0:
        return number
    if scale == AUTO:
        raise ValueError(
            f"feedback scale {AUTO!r} is decided per layer by convert() from the model; "
            f"a single layer needs one of {', '.join(SCALES)} or a float > 0"
        )
    valid = ", ".join((AUTO, *SCALES) if allow_auto else SCALES)
    raise ValueError(f"invalid feedback scale {scale!r}; valid: {valid} or a float > 0")


def parse_rule(name) -> Optional[str]:
    """The canonical name of rule ``name`` (or alias), or None for None / :data:`PLAIN`."""
    if name is None or (isinstance(name, str) and name.strip().lower() == PLAIN):
        return None
    if not isinstance(name, str):
        raise ValueError(f"rule must be a name, None or {PLAIN!r}, got {name!r}")
    return get_rule(name).name


def scale_factor(scale: Scale, weight: Tensor) -> Union[float, Tensor]:
    """The factor s for ``weight`` (conv: (C_out, C_in/groups, kh, kw); Linear: (out, in))."""
    if scale == "xiao":
        if weight.dim() == 2:
            return weight.shape[1] ** -0.5
        return math.sqrt(2.0 / (weight.shape[0] * math.prod(weight.shape[2:])))
    if scale == "unit":
        return 1.0
    if scale == "weight_mean":
        return weight.detach().abs().mean()
    if scale == "weight_std":
        return weight.detach().std(correction=0)
    return float(scale)


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from ``parts`` (same in every process, unlike ``hash()``)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _gaussian(weight: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """M = N(0, 1) * s, of W's shape."""
    return torch.randn(
        weight.shape, generator=generator, device=generator.device, dtype=torch.float32
    ).mul_(scale)


def _abs_gaussian(weight: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """|M| with M = N(0, 1) * s, of W's shape."""
    return _gaussian(weight, scale, generator).abs_()


def _weight(weight, state, scale, noise):
    return weight


def _state(weight, state, scale, noise):
    return state


def _scaled_sign(weight, state, scale, noise):
    return torch.sign(weight).mul_(scale)


def _state_with_sign(weight, state, scale, noise):
    return torch.sign(weight).mul_(state)


def _noise_magnitude_with_scaled_sign(weight, state, scale, noise):
    return torch.sign(weight).mul_(scale).mul_(noise.abs())


def _register_builtin_rules() -> None:
    register_rule(
        BACKPROP,
        FeedbackRule(_weight, description="backprop control: B = W"),
        aliases=("backprop",),
    )
    register_rule(
        "fa",
        FeedbackRule(
            _state,
            state="buffer",
            init_state=_gaussian,
            compact_state=True,
            scale_at="draw",
            description="feedback alignment: B = N(0,1)*s drawn once, fixed",
        ),
        aliases=("feedback_alignment",),
    )
    register_rule(
        "sign_symmetry",
        FeedbackRule(
            _scaled_sign,
            scale_at="backward",
            description="sign symmetry: B = sign(W) * s(W), from the current W",
        ),
        aliases=("usf",),
    )
    register_rule(
        "frsf",
        FeedbackRule(
            _state_with_sign,
            state="buffer",
            init_state=_abs_gaussian,
            compact_state=True,
            scale_at="draw",
            description="fixed random magnitude: B = |M| * sign(W), M = N(0,1)*s drawn once",
        ),
    )
    register_rule(
        "brsf",
        FeedbackRule(
            _noise_magnitude_with_scaled_sign,
            noise_per_step=True,
            scale_at="backward",
            description="batchwise random magnitude: B = |M| * s(W) * sign(W), M new each step",
        ),
    )
    register_rule(
        "kolen_pollack",
        FeedbackRule(
            _state,
            state="parameter",
            init_state=_gaussian,
            scale_at="draw",
            description="Kolen-Pollack: B = N(0,1)*s at start, then updated with dL/dW",
        ),
        aliases=("kp",),
    )


_register_builtin_rules()
