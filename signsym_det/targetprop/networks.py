"""Layered classifiers for the layer-local algorithms (plain torch).

A :class:`LayeredClassifier` is ``h_0 = x``, ``h_{l+1} = layers[l](h_l)``; its logits are the
first ``num_classes`` units of ``h_L`` (any further units are AO-SDTP's auxiliary outputs).
:class:`TargetPropNet` adds the learned inverses ``g_l: h_{l+1} -> h_l`` that DTP needs.
:class:`ConvNetSpec` builds Bartunov et al.'s family: strided convs (no pooling, so a conv's
inverse is a transposed conv of the same geometry) then one linear output layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from torch import Tensor, nn

from ..feedback import LocallyConnected2d

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module from :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class LayeredClassifier(nn.Module):
    """``logits = layers[L-1](...layers[0](x))[:, :num_classes]``, trained by backprop or a rule."""

    def __init__(self, layers: Sequence[nn.Module], num_classes: int):
        super().__init__()
        if len(layers) < 2:
            raise ValueError(f"a layered classifier needs >= 2 layers, got {len(layers)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.layers = nn.ModuleList(layers)
        self.num_classes = num_classes

    def compose(self, x: Tensor) -> Tensor:
        """The logits by the plain composition of the layers (autograd gives backprop)."""
        for layer in self.layers:
            x = layer(x)
        return x[:, : self.num_classes]

    def forward(self, x: Tensor) -> Tensor:
        return self.compose(x)


class TargetPropNet(LayeredClassifier):
    """A layered classifier plus inverses: ``inverses[l]`` maps ``h_{l+1}`` back to ``h_l``.

    Layer 0 needs no inverse (the input gets no target); DTP uses ``g_1 .. g_{L-2}``, SDTP and
    AO-SDTP also ``g_{L-1}`` (the output layer's).
    """

    def __init__(
        self, layers: Sequence[nn.Module], inverses: Mapping[int, nn.Module], num_classes: int
    ):
        super().__init__(layers, num_classes)
        bad = sorted(set(inverses) - set(range(1, len(layers))))
        if bad:
            raise ValueError(f"inverse indices {bad} are not in 1..{len(layers) - 1}")
        self.inverses = nn.ModuleDict({str(index): inverses[index] for index in sorted(inverses)})

    def inverse(self, index: int) -> nn.Module:
        """``g_index``, the learned inverse of ``layers[index]``."""
        if str(index) not in self.inverses:
            raise ValueError(f"layer {index} has no inverse; inverses: {list(self.inverses)}")
        return self.inverses[str(index)]


@dataclass(frozen=True)
class ConvNetSpec:
    """Bartunov's family: ``len(channels)`` convs (kernel ``kernel_size``, stride ``stride``,
    padding ``kernel_size // 2``, each followed by ``activation``), then a Linear output layer
    with ``num_classes + aux_outputs`` units. ``locally_connected``: the same geometry with
    :class:`~signsym_det.feedback.LocallyConnected2d` layers (untied filters) instead of convs;
    their DTP inverses stay transposed convs."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    channels: tuple = (32, 64)
    kernel_size: int = 5
    stride: int = 2
    activation: str = "tanh"
    aux_outputs: int = 0
    locally_connected: bool = False

    def __post_init__(self):
        positive = {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
        }
        for name, value in {**positive, **dict(enumerate(self.channels))}.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ConvNetSpec {name} must be a positive int, got {value!r}")
        if not self.channels:
            raise ValueError("ConvNetSpec channels must name at least one conv layer")
        if not isinstance(self.aux_outputs, int) or self.aux_outputs < 0:
            raise ValueError(f"ConvNetSpec aux_outputs must be an int >= 0, got {self.aux_outputs}")
        make_activation(self.activation)
        if self.sizes()[-1] < 1:
            raise ValueError(f"ConvNetSpec {self} shrinks the image below one pixel")

    def sizes(self) -> list:
        """Spatial size of the input and of each conv's output."""
        sizes, pad = [self.image_size], self.kernel_size // 2
        for _ in self.channels:
            sizes.append((sizes[-1] + 2 * pad - self.kernel_size) // self.stride + 1)
        return sizes

    def layers(self) -> list:
        """The forward maps f_l (fresh modules, torch's default init)."""
        pad, widths = self.kernel_size // 2, (self.in_channels, *self.channels)
        geometry = (self.kernel_size, self.stride, pad)
        layers = [
            nn.Sequential(
                LocallyConnected2d(c_in, c_out, *geometry, input_size=size)
                if self.locally_connected
                else nn.Conv2d(c_in, c_out, *geometry),
                make_activation(self.activation),
            )
            for c_in, c_out, size in zip(widths, widths[1:], self.sizes())
        ]
        features = self.channels[-1] * self.sizes()[-1] ** 2
        outputs = self.num_classes + self.aux_outputs
        return [*layers, nn.Sequential(nn.Flatten(), nn.Linear(features, outputs))]

    def inverses(self) -> dict:
        """The inverses g_l for layers 1..L-1: transposed convs (+ activation), then Linear."""
        pad, widths, sizes = self.kernel_size // 2, (self.in_channels, *self.channels), self.sizes()
        inverses = {}
        for index in range(1, len(self.channels)):
            size_in, size_out = sizes[index], sizes[index + 1]
            extra = size_in - ((size_out - 1) * self.stride - 2 * pad + self.kernel_size)
            inverses[index] = nn.Sequential(
                nn.ConvTranspose2d(
                    widths[index + 1], widths[index], self.kernel_size, self.stride, pad, extra
                ),
                make_activation(self.activation),
            )
        last = self.channels[-1], sizes[-1], sizes[-1]
        inverses[len(self.channels)] = nn.Sequential(
            nn.Linear(self.num_classes + self.aux_outputs, last[0] * last[1] * last[2]),
            make_activation(self.activation),
            nn.Unflatten(1, last),
        )
        return inverses


def build_classifier(spec: ConvNetSpec) -> LayeredClassifier:
    """The spec's network for backprop or a feedback rule (``signsym_det.feedback.convert``)."""
    return LayeredClassifier(spec.layers(), spec.num_classes)


def build_dtp_classifier(spec: ConvNetSpec) -> TargetPropNet:
    """The spec's network with its inverses, for DTP / SDTP / AO-SDTP."""
    return TargetPropNet(spec.layers(), spec.inverses(), spec.num_classes)
