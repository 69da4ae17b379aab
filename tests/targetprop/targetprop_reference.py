"""Small networks and independent computations shared by the targetprop tests."""

import torch
import torch.nn.functional as F
from torch import nn

from signsym_det.targetprop import TargetPropNet


def tanh_mlp(widths, num_classes, aux_outputs=0):
    """A TargetPropNet: tanh hidden layers, a linear output layer, tanh inverses (Linear+Tanh)."""
    widths = [*widths, num_classes + aux_outputs]
    layers = [nn.Sequential(nn.Linear(a, b), nn.Tanh()) for a, b in zip(widths[:-2], widths[1:-1])]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    inverses = {
        index: nn.Sequential(nn.Linear(widths[index + 1], widths[index]), nn.Tanh())
        for index in range(1, len(layers))
    }
    return TargetPropNet(layers, inverses, num_classes)


def blobs(n=64, dim=4, seed=0):
    """Two Gaussian blobs at +-2 along a random unit direction: linearly separable."""
    generator = torch.Generator().manual_seed(seed)
    direction = F.normalize(torch.randn(dim, generator=generator), dim=0)
    labels = torch.arange(n) % 2
    x = torch.randn(n, dim, generator=generator) * 0.5 + (2 * labels - 1)[:, None] * 2 * direction
    return x, labels


def loss_gradient(layers, h, labels, num_classes):
    """dL/dh for L = summed cross-entropy of the composition of ``layers`` applied to h."""
    h = h.detach().clone().requires_grad_(True)
    out = h
    for layer in layers:
        out = layer(out)
    loss = F.cross_entropy(out[:, :num_classes], labels, reduction="sum")
    return torch.autograd.grad(loss, h)[0]
