"""weight_alignment and gradient_alignment against angles computed here from B, W and g."""

import math

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import angle_degrees
from torch import nn

from signsym_det.feedback import (
    FeedbackConv2d,
    FeedbackLinear,
    convert,
    gradient_alignment,
    weight_alignment,
)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_weight_alignment_bp_is_zero_and_sign_symmetry_matches_formula():
    assert weight_alignment(convert(_net(), "bp")) == {"0": 0.0, "3": 0.0}

    net = convert(_net(), "sign_symmetry")
    angles = weight_alignment(net)
    for name in ("0", "3"):
        weight = net.get_submodule(name).weight.detach().double().flatten()
        # sign(W) . W = sum|W|, |sign(W)| = sqrt(n)
        cosine = weight.abs().sum() / (math.sqrt(weight.numel()) * weight.norm())
        assert angles[name] == pytest.approx(math.degrees(math.acos(float(cosine))), abs=1e-6)


def test_weight_alignment_fa_is_angle_to_stored_feedback():
    net = convert(_net(), "fa", seed=4)
    angles = weight_alignment(net)
    for name in ("0", "3"):
        layer = net.get_submodule(name)
        expected = angle_degrees(layer.feedback_state(), layer.weight.detach())
        assert angles[name] == pytest.approx(expected, abs=1e-6)
        assert 60 < angles[name] < 120  # random B is nearly orthogonal to W


@pytest.mark.parametrize("rule", ["bp", "fa"])
def test_gradient_alignment_conv_and_linear(rule):
    torch.manual_seed(1)
    conv = FeedbackConv2d(3, 4, 3, stride=2, padding=1, rule=rule, seed=2)
    linear = FeedbackLinear(5, 2, rule=rule, seed=3)
    model = nn.ModuleDict({"conv": conv, "linear": linear})
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    z = torch.randn(4, 5, requires_grad=True)
    with gradient_alignment(model) as angles:
        out, out_linear = conv(x), linear(z)
        g, g_linear = torch.randn_like(out), torch.randn_like(out_linear)
        (out * g).sum().add((out_linear * g_linear).sum()).backward()

    feedback = conv.feedback_matrix()
    expected_conv = angle_degrees(
        F.conv_transpose2d(g, feedback, stride=2, padding=1),
        F.conv_transpose2d(g, conv.weight.detach(), stride=2, padding=1),
    )
    expected_linear = angle_degrees(g_linear @ linear.feedback_matrix(), g_linear @ linear.weight)
    if rule == "bp":
        assert angles == pytest.approx({"conv": 0.0, "linear": 0.0}, abs=1e-5)
    else:
        assert angles["conv"] == pytest.approx(expected_conv, abs=1e-4)
        assert angles["linear"] == pytest.approx(expected_linear, abs=1e-4)
        assert angles["conv"] > 10
    assert all("_alignment_observer" not in vars(layer) for layer in (conv, linear))


def test_gradient_alignment_shared_layer_uses_all_calls_and_can_be_disabled():
    torch.manual_seed(2)
    layer = FeedbackConv2d(2, 3, 3, padding=1, rule="fa")
    a = torch.randn(1, 2, 5, 5, requires_grad=True)
    b = torch.randn(1, 2, 4, 4, requires_grad=True)
    with gradient_alignment(layer) as angles:
        out_a, out_b = layer(a), layer(b)
        g_a, g_b = torch.randn_like(out_a), torch.randn_like(out_b)
        ((out_a * g_a).sum() + (out_b * g_b).sum()).backward()

    def both(weight):
        grad_a = F.conv_transpose2d(g_a, weight, padding=1)
        grad_b = F.conv_transpose2d(g_b, weight, padding=1)
        return torch.cat([grad_a.flatten(), grad_b.flatten()])

    expected = angle_degrees(both(layer.feedback_state()), both(layer.weight.detach()))
    assert angles == pytest.approx({"": expected}, abs=1e-4)

    with gradient_alignment(layer, enabled=False) as angles:
        assert "_alignment_observer" not in vars(layer)
        layer(a).sum().backward()
    assert angles == {}
