"""update_angles: the angle to backprop's gradient, with true backprop as the reference."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from targetprop_reference import blobs, tanh_mlp

from signsym_det.feedback import convert
from signsym_det.targetprop import (
    DTPStep,
    backprop_gradients,
    layer_gradients,
    make_dtp_optimizers,
    update_angles,
)


def test_reference_is_backprop_even_on_feedback_layers():
    torch.manual_seed(0)
    net = tanh_mlp([4, 8, 8], num_classes=2)
    plain = copy.deepcopy(net)
    convert(net, "fa", seed=0)
    x, labels = blobs(16)
    F.cross_entropy(plain(x), labels).backward()
    expected = {f"layers.{name}": p.grad for name, p in plain.layers.named_parameters()}
    reference = backprop_gradients(net, x, labels)
    assert sorted(reference) == ["layers.0.0.weight", "layers.1.0.weight", "layers.2.weight"]
    for name, grad in reference.items():
        torch.testing.assert_close(grad, expected[name])

    F.cross_entropy(net(x), labels).backward()
    angles = update_angles(layer_gradients(net), reference)
    assert angles["layers.2.weight"] == pytest.approx(0.0, abs=1e-4)
    assert angles["layers.0.0.weight"] > 1.0


def test_angles_match_arccos_of_the_cosine():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    cosine = float((a.double() * b.double()).sum() / (a.double().norm() * b.double().norm()))
    angles = update_angles({"w": a, "flipped": -b}, {"w": b, "flipped": b})
    assert angles["w"] == pytest.approx(math.degrees(math.acos(cosine)), abs=1e-6)
    assert angles["flipped"] == pytest.approx(180.0, abs=1e-6)
    with pytest.raises(ValueError, match="no backprop gradient for \\['v'\\]"):
        update_angles({"v": a}, {"w": b})


def test_dtp_step_angles_around_one_step():
    torch.manual_seed(0)
    net = tanh_mlp([4, 8, 8], num_classes=2)
    forward, inverse = make_dtp_optimizers(net, "dtp", 1e-2, 1e-2)
    step = DTPStep(net, forward, inverse, variant="dtp")
    x, labels = blobs(16)
    for iteration in range(2):
        reference = backprop_gradients(net, x, labels)
        step(x, labels, iteration)
        angles = update_angles(layer_gradients(net), reference)
        assert sorted(angles) == ["layers.0.0.weight", "layers.1.0.weight", "layers.2.weight"]
        assert angles["layers.2.weight"] == pytest.approx(0.0, abs=1e-4)
        # the penultimate target is h - beta * dL/dh, so its layer follows backprop exactly
        assert angles["layers.1.0.weight"] == pytest.approx(0.0, abs=1e-2)
