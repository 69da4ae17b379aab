"""The one cache key of the feedback layers: a tensor's identity and in-place version.

A value derived from tensors (B from W, a low-precision copy of W, the host copy of a step
counter) stays valid while each of those tensors is the same object, unmodified in place:
:class:`TensorVersion` records exactly that, holding the tensor weakly.
"""

from __future__ import annotations

import weakref
from typing import Optional

from torch import Tensor


class TensorVersion:
    """What identifies a tensor's current values: the object (held weakly) and its version."""

    __slots__ = ("tensor", "version")

    def __init__(self, tensor: Tensor):
        self.tensor = weakref.ref(tensor)
        self.version = tensor._version

    def matches(self, tensor: Optional[Tensor]) -> bool:
        """True iff ``tensor`` is the recorded object with no in-place change since."""
        return self.tensor() is tensor and self.version == tensor._version


class LazyFeedback:
    """B of one layer for one iteration: made on first use, shared, dropped after last use.

    The layer's source hands the same object to every forward call made while the tensors B
    is made from (W, a stored state) and its spec (rule, scale, step) are unchanged
    (:meth:`matches`); each call counts as one pending use. Backward calls it with the weight
    it saved (``self(weight)``: made once, then reused while dtype and device match) and then
    :meth:`release`: when no use is pending, B is dropped. A backward that never runs only
    keeps B until the source makes its next LazyFeedback. Copies and pickles are empty.
    """

    __slots__ = ("make", "inputs", "spec", "pending", "value")

    def __init__(self, make=None, inputs: tuple = (), spec=None):
        self.make = make
        self.inputs = tuple(TensorVersion(tensor) for tensor in inputs)
        self.spec = spec
        self.pending = 0
        self.value: Optional[Tensor] = None

    def matches(self, inputs: tuple, spec) -> bool:
        """True iff B made from ``inputs`` with ``spec`` would be this one's."""
        return (
            self.make is not None
            and self.spec == spec
            and len(self.inputs) == len(inputs)
            and all(key.matches(tensor) for key, tensor in zip(self.inputs, inputs))
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
