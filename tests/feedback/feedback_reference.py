"""Independent reference computations for the feedback tests (no library code for B's math)."""

import copy
import math

import torch
from torch import nn

from signsym_det.feedback.rules import derive_seed


def xiao_scale(weight: torch.Tensor) -> float:
    """sqrt(2 / (kh * kw * C_out)) for a conv weight, 1 / sqrt(in) for a Linear weight."""
    if weight.dim() == 2:
        return 1.0 / math.sqrt(weight.shape[1])
    c_out, _, kh, kw = weight.shape
    return math.sqrt(2.0 / (kh * kw * c_out))


def brsf_noise(layer, step: int) -> torch.Tensor:
    """The documented brsf draw: N(0, 1) from a generator seeded by (layer seed, step)."""
    generator = torch.Generator().manual_seed(derive_seed(layer.feedback_seed, step))
    return torch.randn(layer.weight.shape, generator=generator)


def rounded_to_16_levels(drawn: torch.Tensor) -> torch.Tensor:
    """The documented 4-bit rounding of fixed_feedback="packed": levels (k + o) * step, k =
    0..15, o = -7.5 (signed) or 0.5 (>= 0), k = clamp(floor(M / q - o + 1/2), 0, 15) with q =
    0.3352 rms (signed) or 0.1881 rms, step = rms(M) / rms(k + o)."""
    rms = float(drawn.square().mean().sqrt())
    offset, relative = (-7.5, 0.3352) if drawn.min() < 0 else (0.5, 0.1881)
    codes = torch.clamp(torch.floor(drawn / (relative * rms) - offset + 0.5), 0, 15)
    levels = codes + offset
    step = float(torch.tensor(rms / float(levels.square().mean().sqrt()), dtype=torch.float32))
    return levels * step


def fixed_state(layer) -> torch.Tensor:
    """fa/frsf/kolen_pollack's tensor: the one the layer stores, else the documented draw
    N(0, 1) * s from a CPU generator seeded by the layer's seed (fixed_feedback="regenerate"),
    rounded to 16 levels where the layer keeps it packed (the default)."""
    stored = layer._parameters.get("feedback_weight", layer._buffers.get("feedback_weight"))
    if stored is not None:
        return stored.detach().clone()
    assert layer.scale == "xiao", "the reference draw knows the xiao scale only"
    generator = torch.Generator().manual_seed(layer.feedback_seed)
    drawn = torch.randn(layer.weight.shape, generator=generator) * xiao_scale(layer.weight)
    if layer.rule == "frsf":
        drawn = drawn.abs()
    if "feedback_codes" in layer._buffers:
        return rounded_to_16_levels(drawn)
    return drawn


def reference_feedback(layer) -> torch.Tensor:
    """B from each rule's definition, with the layer's stored random state where it has one."""
    weight = layer.weight.detach()
    sign = torch.sign(weight)
    if layer.rule == "bp":
        return weight.clone()
    if layer.rule == "sign_symmetry":
        return sign * xiao_scale(weight)
    if layer.rule in ("fa", "kolen_pollack"):
        return fixed_state(layer)
    if layer.rule == "frsf":
        return fixed_state(layer) * sign
    if layer.rule == "brsf":
        noise = brsf_noise(layer, int(layer.feedback_step))
        return noise.abs() * xiao_scale(weight) * sign
    raise AssertionError(f"no reference for {layer.rule}")


def input_grad_with_weight(plain: nn.Module, weight: torch.Tensor, x, g) -> torch.Tensor:
    """dL/dx of plain autograd through a copy of ``plain`` whose weight is ``weight``."""
    layer = copy.deepcopy(plain)
    with torch.no_grad():
        layer.weight.copy_(weight)
    x = x.detach().clone().requires_grad_(True)
    layer(x).backward(g)
    return x.grad


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """acos of the cosine between flatten(a) and flatten(b), in float64."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    cosine = float(a.dot(b) / (a.norm() * b.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
