"""Layer-level benchmark: FeedbackConv2d vs nn.Conv2d, forward + backward, ResNet-50's convs.

The shapes are recorded from detectron2's ResNet-50 (the backbone of the R50-FPN configs) on
an input of the benchmark's size, so each conv is timed on the activation it really gets.
Every rule's layer gets the same weights as the plain conv, and its input requires grad, as
inside a network; a step is forward, backward, and dropping the gradients (zero_grad), so
a B made from W is made anew each step, as after each optimizer step in training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_resnet_backbone
from torch import nn

from ..feedback import convert


@dataclass(frozen=True)
class ConvShape:
    """One conv of the network: its geometry and the (C, H, W) of its input."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return (
            f"{self.in_channels}->{self.out_channels} k{self.kernel} s{self.stride} "
            f"@{self.height}x{self.width}"
        )


def resnet_conv_shapes(cfg, size: int) -> Counter:
    """Counter of the ConvShapes of cfg's ResNet body on a ``size`` x ``size`` image."""
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    shapes: Counter = Counter()

    def record(module, inputs, output):
        x = inputs[0]
        shapes[
            ConvShape(
                module.in_channels,
                module.out_channels,
                module.kernel_size[0],
                module.stride[0],
                module.padding[0],
                x.shape[-2],
                x.shape[-1],
            )
        ] += 1

    handles = [
        m.register_forward_hook(record) for m in backbone.modules() if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        backbone(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return shapes


def conv_variants(shape: ConvShape, rules, device="cpu", seed: int = 0) -> dict[str, nn.Module]:
    """{"stock": nn.Conv2d, rule: FeedbackConv2d with the same weights, ...}."""
    torch.manual_seed(seed)
    plain = nn.Conv2d(
        shape.in_channels,
        shape.out_channels,
        shape.kernel,
        shape.stride,
        shape.padding,
        bias=False,
    ).to(device)
    variants = {"stock": plain}
    for rule in rules:
        layer = nn.Conv2d(
            shape.in_channels,
            shape.out_channels,
            shape.kernel,
            shape.stride,
            shape.padding,
            bias=False,
        ).to(device)
        layer.load_state_dict(plain.state_dict())
        variants[rule] = convert(
            layer, rule, scale="xiao", seed=seed
        )  # the cost of the rule, not of a scale
    return variants


class ConvStep:
    """forward + backward of one conv on a fixed input and incoming gradient, then zero_grad."""

    def __init__(self, layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, autocast=None):
        self.layer, self.x, self.grad, self.autocast = layer, x, grad, autocast

    def __call__(self) -> None:
        with torch.autocast(
            self.x.device.type, dtype=self.autocast, enabled=self.autocast is not None
        ):
            out = self.layer(self.x)
        out.backward(self.grad.to(out.dtype))
        self.x.grad = None
        for parameter in self.layer.parameters():
            parameter.grad = None


def conv_steps(shape: ConvShape, rules, batch: int, device="cpu", autocast=None, seed: int = 0):
    """{variant: ConvStep} on one shared input (requiring grad) and incoming gradient."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, shape.in_channels, shape.height, shape.width, generator=generator)
    x = x.to(device).requires_grad_(True)
    variants = conv_variants(shape, rules, device, seed)
    with torch.no_grad():
        out_shape = variants["stock"](x).shape
    grad = torch.randn(out_shape, generator=generator).to(device)
    return {name: ConvStep(layer, x, grad, autocast) for name, layer in variants.items()}
