"""How each rule's B evolves: with W, fixed, per iteration, or trained (Kolen-Pollack)."""

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import brsf_noise, reference_feedback, xiao_scale
from torch import nn

from signsym_det.feedback import (
    FeedbackConv2d,
    advance_feedback_step,
    convert,
    install_step_hook,
)


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
    )


class SharedConvNet(nn.Module):
    """One conv applied to two inputs per forward (like RetinaNet's head over FPN levels)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, a, b):
        return self.conv(a), self.conv(b)


def test_sign_symmetry_follows_sign_flips_after_optimizer_step():
    torch.manual_seed(1)
    layer = FeedbackConv2d(3, 4, 3, padding=1, rule="sign_symmetry")
    optimizer = torch.optim.SGD(layer.parameters(), lr=5.0)
    signs_before = torch.sign(layer.weight.detach()).clone()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    layer(x).pow(2).sum().backward()
    optimizer.step()
    weight = layer.weight.detach()
    assert (torch.sign(weight) != signs_before).any()

    expected = torch.sign(weight) * xiao_scale(weight)
    assert torch.equal(layer.feedback_matrix(), expected)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(x.grad, F.conv_transpose2d(g, expected, padding=1))


def test_fa_feedback_fixed_through_training_and_state_dict():
    net = convert(_small_net(), "fa", seed=11, scale="xiao")
    feedback_before = [net[0].feedback_state().clone(), net[3].feedback_state().clone()]
    assert "0.feedback_weight" in net.state_dict()
    assert all("feedback_weight" not in name for name, _ in net.named_parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, weight_decay=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.randn(2, 3, 5, 5, requires_grad=True)).pow(2).sum().backward()
        optimizer.step()
    assert torch.equal(net[0].feedback_state(), feedback_before[0])
    assert torch.equal(net[3].feedback_matrix(), feedback_before[1])

    other = convert(_small_net(), "fa", seed=12, scale="xiao")
    assert not torch.equal(other[0].feedback_state(), feedback_before[0])
    other.load_state_dict(net.state_dict())
    assert torch.equal(other[0].feedback_matrix(), feedback_before[0])
    assert torch.equal(other[3].feedback_state(), feedback_before[1])


@pytest.mark.parametrize("rule", ["fa", "frsf", "kolen_pollack"])
def test_fixed_draws_are_reproducible_per_seed_and_distinct_per_layer(rule):
    first, second = (
        convert(_small_net(), rule, seed=7, scale="xiao"),
        convert(_small_net(), rule, seed=7, scale="xiao"),
    )
    third = convert(_small_net(), rule, seed=8, scale="xiao")
    for index in (0, 3):
        assert torch.equal(first[index].feedback_state(), second[index].feedback_state())
        assert not torch.equal(first[index].feedback_state(), third[index].feedback_state())
    twins = convert(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), rule, seed=7, scale="xiao")
    assert not torch.equal(twins[0].feedback_state(), twins[1].feedback_state())


def test_frsf_magnitudes_fixed_and_signs_follow_weight():
    net = convert(_small_net(), "frsf", seed=2, scale="xiao")
    magnitude = net[0].feedback_state().clone()
    assert (magnitude >= 0).all()
    before = net[0].feedback_matrix()
    with torch.no_grad():
        net[0].weight.neg_()
    assert torch.equal(net[0].feedback_matrix(), torch.sign(net[0].weight.detach()) * magnitude)
    assert torch.equal(net[0].feedback_matrix(), -before)


def _shared_grads(net, a, b):
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    out_a, out_b = net(a, b)
    g_a, g_b = torch.randn_like(out_a), torch.randn_like(out_b)
    (out_a * g_a).sum().add((out_b * g_b).sum()).backward()
    return a.grad, b.grad, g_a, g_b


def test_brsf_redraws_once_per_iteration_shared_layer_consistent():
    torch.manual_seed(3)
    net = convert(SharedConvNet(), "brsf", seed=5, scale="xiao")
    conv = net.conv
    a, b = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)

    grad_a, grad_b, g_a, g_b = _shared_grads(net, a, b)
    assert int(conv.feedback_step) == 1  # one root forward, two calls of the layer
    feedback = reference_feedback(conv)
    torch.testing.assert_close(grad_a, F.conv_transpose2d(g_a, feedback, padding=1))
    torch.testing.assert_close(grad_b, F.conv_transpose2d(g_b, feedback, padding=1))
    torch.testing.assert_close(conv.feedback_matrix(), feedback)

    _shared_grads(net, a, b)
    assert int(conv.feedback_step) == 2
    next_feedback = conv.feedback_matrix()
    assert torch.equal(torch.sign(next_feedback), torch.sign(feedback))
    assert not torch.allclose(next_feedback.abs(), feedback.abs())
    weight = conv.weight.detach()
    expected = brsf_noise(conv, 2).abs() * xiao_scale(weight) * torch.sign(weight)
    torch.testing.assert_close(next_feedback, expected)

    net.eval()
    net(a, b)
    assert int(conv.feedback_step) == 2


def test_brsf_identical_across_models_and_resumes_from_checkpoint():
    first, second = (
        convert(_small_net(), "brsf", seed=9, scale="xiao"),
        convert(_small_net(), "brsf", seed=9, scale="xiao"),
    )
    x = torch.randn(2, 3, 5, 5)
    for _ in range(3):
        first(x)
        second(x)
    assert torch.equal(first[0].feedback_matrix(), second[0].feedback_matrix())
    assert torch.equal(first[3].feedback_matrix(), second[3].feedback_matrix())

    resumed = convert(_small_net(), "brsf", seed=9, scale="xiao")
    resumed.load_state_dict(first.state_dict())
    assert int(resumed[0].feedback_step) == 3
    first(x)
    resumed(x)
    assert torch.equal(first[0].feedback_matrix(), resumed[0].feedback_matrix())


def test_step_hook_installed_once_and_manual_advance():
    net = convert(_small_net(), "brsf", scale="xiao")
    convert(net, "brsf", scale="xiao")
    hooks = [len(module._forward_pre_hooks) for module in net.modules()]
    assert sum(hooks) == 1 and len(net._forward_pre_hooks) == 1
    net(torch.randn(1, 3, 5, 5))
    assert int(net[0].feedback_step) == 1

    layer = FeedbackConv2d(3, 4, 3, rule="brsf")
    advance_feedback_step(layer)
    advance_feedback_step(layer)
    assert int(layer.feedback_step) == 2
    install_step_hook(layer)
    layer(torch.randn(1, 3, 5, 5))
    assert int(layer.feedback_step) == 3


def test_kolen_pollack_feedback_gets_weight_grad_and_converges_under_weight_decay():
    torch.manual_seed(4)
    # float64: in float32 the cancellation in (W - lr g) - (B - lr g) is ~1e-4 relative
    layer = FeedbackConv2d(3, 4, 3, padding=1, rule="kolen_pollack", dtype=torch.float64)
    assert isinstance(layer.feedback_weight, nn.Parameter)
    lr, decay = 0.1, 0.5
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=decay)
    distance = (layer.feedback_weight - layer.weight).norm().item()
    for _ in range(4):
        optimizer.zero_grad()
        x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
        layer(x).pow(2).sum().backward()
        assert torch.equal(layer.feedback_weight.grad, layer.weight.grad)
        assert layer.feedback_weight.grad.data_ptr() != layer.weight.grad.data_ptr()
        optimizer.step()
        new_distance = (layer.feedback_weight - layer.weight).norm().item()
        assert new_distance == pytest.approx(distance * (1 - lr * decay), rel=1e-9)
        distance = new_distance


def test_kolen_pollack_feedback_trains_even_when_input_needs_no_grad():
    layer = FeedbackConv2d(3, 4, 3, rule="kolen_pollack")
    layer(torch.randn(1, 3, 5, 5)).sum().backward()
    assert torch.equal(layer.feedback_weight.grad, layer.weight.grad)
    layer.weight.requires_grad_(False)
    layer.feedback_weight.grad = None
    layer(torch.randn(1, 3, 5, 5, requires_grad=True)).sum().backward()
    assert layer.feedback_weight.grad is None
