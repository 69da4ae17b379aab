"""The standard diagnostic: angle between an algorithm's weight update and backprop's.

Per weight of ``net.layers`` (biases left out), around one training step::

    reference = backprop_gradients(net, x, labels)  # before the step changes the weights
    step(x, labels)                                 # DTPStep, or DFA/rule backward + step
    angles = update_angles(layer_gradients(net), reference)

``layer_gradients`` reads what the algorithm left in ``.grad`` (the gradient its optimizer
descends, before any Adam-like rescaling); the reference is the mean cross-entropy's gradient
through ``net.compose`` with feedback layers stripped on a copy, i.e. true backprop.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..feedback import strip
from ..feedback.alignment import angle_degrees
from .networks import LayeredClassifier


def is_weight(name: str) -> bool:
    """True for a layer's forward weight (not its bias, nor a rule's ``feedback_weight``)."""
    return name.rsplit(".", 1)[-1] == "weight"


def layer_gradients(net: LayeredClassifier) -> dict:
    """``{name: grad}`` (copies) of the weights of ``net.layers`` that hold a gradient."""
    return {
        f"layers.{name}": param.grad.detach().clone()
        for name, param in net.layers.named_parameters()
        if is_weight(name) and param.grad is not None
    }


def backprop_gradients(net: LayeredClassifier, x: Tensor, labels: Tensor) -> dict:
    """``{name: dL/dW}`` of the weights of ``net.layers`` by backprop, L the mean cross-entropy."""
    reference = strip(net, inplace=False)
    names = [name for name, _ in reference.layers.named_parameters() if is_weight(name)]
    weights = [reference.layers.get_parameter(name) for name in names]
    loss = F.cross_entropy(reference.compose(x), labels)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return {f"layers.{n}": g for n, g in zip(names, grads) if g is not None}


def update_angles(gradients: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> dict:
    """``{name: degrees}`` between each of ``gradients`` and backprop's ``reference[name]``."""
    unknown = sorted(set(gradients) - set(reference))
    if unknown:
        raise ValueError(f"no backprop gradient for {unknown}; weights: {sorted(reference)}")
    return {name: angle_degrees(grad, reference[name]) for name, grad in gradients.items()}
