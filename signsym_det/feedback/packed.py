"""A fixed random tensor kept in 4 bits per value: 16 evenly spaced levels, two codes a byte.

``pack(M)`` keeps the codes of the first half of M's values in the low nibbles, those of the
second half in the high nibbles, rounding M to ``(k + offset) * step``, k = 0..15: a signed
M gets offset -7.5 and the rounding step q = 0.3352 rms(M) (the mean-square-optimal 16-level
uniform quantizer of a Gaussian), an M >= 0 gets offset 0.5 and q = 0.1881 rms(M) (that of a
half-Gaussian);
k = clamp(floor(M / q - offset + 0.5), 0, 15), and ``step`` is q rescaled so that the levels
keep M's rms. ``unpack`` gives ``(k + offset) * step`` in float32, which is exact up to the
one rounding of the product, so the values are the same on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LEVELS = 16
#: (offset, q / rms(M)): the optimal uniform 16-level quantizers of N(0, 1) and |N(0, 1)|.
SIGNED = (-7.5, 0.3352)
NON_NEGATIVE = (0.5, 0.1881)


@dataclass(frozen=True)
class Packing:
    """How codes map to values: value = (code + offset) * step."""

    offset: float
    step: float


def pack(values: Tensor) -> tuple[Tensor, Packing]:
    """(uint8 codes, two per byte, of the flattened ``values``; their :class:`Packing`)."""
    flat = values.detach().flatten().to(torch.float32)
    rms = float(flat.square().mean().sqrt())
    if not math.isfinite(rms):
        raise ValueError(f"cannot pack a tensor of rms {rms}: it is not finite")
    if rms == 0.0:  # an all-zero B (scale weight_std of a zero-initialised W): kept exactly
        return flat.new_zeros((flat.numel() + 1) // 2, dtype=torch.uint8), Packing(0.0, 0.0)
    offset, relative_q = SIGNED if bool((flat < 0).any()) else NON_NEGATIVE
    q = relative_q * rms
    codes = torch.floor(flat / q - offset + 0.5).clamp_(0, LEVELS - 1).to(torch.uint8)
    levels_rms = float(codes.to(torch.float32).add_(offset).square().mean().sqrt())
    step = float(torch.tensor(rms / levels_rms, dtype=torch.float32))  # as float32 uses it
    half = (codes.numel() + 1) // 2
    codes = torch.cat((codes, codes.new_zeros(2 * half - codes.numel())))
    return codes[:half] | (codes[half:] << 4), Packing(offset, step)


def unpack(codes: Tensor, packing: Packing, shape) -> Tensor:
    """The float32 tensor of ``shape`` that :func:`pack` stored in ``codes``.

    Whole-tensor passes only (nibbles, one uint8 -> float32 conversion, then add and multiply
    in place): about what ``sign(W) * s`` costs on CPU.
    """
    values = torch.cat((codes & (LEVELS - 1), codes >> 4))[: math.prod(shape)]
    return values.to(torch.float32).add_(packing.offset).mul_(packing.step).view(shape)
