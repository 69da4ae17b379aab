"""Forward equals the plain layer; dL/dx uses the rule's B; dL/dW, dL/db are backprop's."""

import copy

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import input_grad_with_weight, reference_feedback
from torch import nn

from signsym_det.feedback import FeedbackConv2d, FeedbackLinear, convert
from signsym_det.feedback.function import FeedbackConv2dFunction, FeedbackLinearFunction

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

RULES = ["bp", "fa", "sign_symmetry", "frsf", "brsf", "kolen_pollack"]

CONV_CASES = {  # (in_channels, out_channels, kernel_size, other nn.Conv2d arguments)
    "3x3": (3, 4, 3, dict(padding=1)),
    "stride2_nobias": (3, 5, 3, dict(stride=2, padding=1, bias=False)),
    "groups_dilation": (4, 6, 3, dict(padding=2, dilation=2, groups=2)),
    "reflect": (2, 3, 3, dict(padding=1, padding_mode="reflect")),
    "same_even_kernel": (2, 3, (4, 2), dict(padding="same")),
    "valid_stride2": (2, 3, 2, dict(stride=2, padding="valid")),
    "1x1_downsample": (4, 8, 1, dict(stride=2, bias=False)),
    "rect_stride": (3, 2, (3, 1), dict(stride=(2, 1), padding=(1, 0))),
}

LINEAR_CASES = {
    "2d": (dict(in_features=5, out_features=3), (4, 5)),
    "nd_input": (dict(in_features=5, out_features=3), (2, 3, 5)),
    "no_bias": (dict(in_features=6, out_features=4, bias=False), (3, 6)),
    "1d_input": (dict(in_features=5, out_features=2), (5,)),
}


def _converted_copy(plain, rule):
    layer = convert(copy.deepcopy(plain), rule, seed=3, scale="xiao")
    assert type(layer) is (FeedbackConv2d if isinstance(plain, nn.Conv2d) else FeedbackLinear)
    return layer


def _grads(layer, x, g):
    x = x.detach().clone().requires_grad_(True)
    out = layer(x)
    out.backward(g)
    bias_grad = None if layer.bias is None else layer.bias.grad
    return out, x.grad, layer.weight.grad, bias_grad


def _check_layer(plain, rule, x):
    layer = _converted_copy(plain, rule)
    g = torch.randn_like(plain(x))
    out, grad_x, grad_w, grad_b = _grads(layer, x, g)
    plain_out, plain_grad_x, plain_grad_w, plain_grad_b = _grads(plain, x, g)

    assert torch.equal(out, plain_out)
    torch.testing.assert_close(grad_w, plain_grad_w, rtol=1e-5, atol=1e-6)
    if plain.bias is not None:
        torch.testing.assert_close(grad_b, plain_grad_b, rtol=1e-5, atol=1e-6)
    expected_grad_x = input_grad_with_weight(plain, reference_feedback(layer), x, g)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=1e-5, atol=1e-6)
    if rule == "bp":
        torch.testing.assert_close(grad_x, plain_grad_x, rtol=0, atol=1e-6)
    else:
        assert not torch.allclose(grad_x, plain_grad_x, atol=1e-3)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_rule_gradients(rule, case):
    torch.manual_seed(0)
    in_channels, out_channels, kernel_size, kwargs = CONV_CASES[case]
    plain = nn.Conv2d(in_channels, out_channels, kernel_size, **kwargs)
    x = torch.randn(2, plain.in_channels, 9, 8)
    _check_layer(plain, rule, x)


@pytest.mark.parametrize("rule", RULES)
def test_conv_channels_last(rule):
    torch.manual_seed(1)
    plain = nn.Conv2d(4, 6, 3, stride=2, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last)
    _check_layer(plain, rule, x)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", LINEAR_CASES)
def test_linear_rule_gradients(rule, case):
    torch.manual_seed(0)
    kwargs, shape = LINEAR_CASES[case]
    plain = nn.Linear(**kwargs)
    _check_layer(plain, rule, torch.randn(*shape))


@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(2, 1, 1, 1), (2, 2, 2, 2), (3, 0, 1, 1)]
)
def test_sign_symmetry_input_grad_is_conv_transpose_with_sign(stride, padding, dilation, groups):
    torch.manual_seed(2)
    layer = FeedbackConv2d(4, 6, 3, stride, padding, dilation, groups, rule="sign_symmetry")
    x = torch.randn(2, 4, 11, 10, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)

    weight = layer.weight.detach()
    feedback = torch.sign(weight) * (2.0 / (3 * 3 * 6)) ** 0.5
    size = [(o - 1) * stride - 2 * padding + dilation * 2 + 1 for o in out.shape[2:]]
    output_padding = [full - s for full, s in zip(x.shape[2:], size)]
    expected = F.conv_transpose2d(
        g, feedback, None, stride, padding, output_padding, groups, dilation
    )
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)


def test_linear_input_grad_is_g_times_b():
    torch.manual_seed(3)
    layer = FeedbackLinear(7, 4, rule="fa", seed=5)
    x = torch.randn(3, 2, 7, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(x.grad, g @ layer.feedback_state(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        layer.weight.grad, g.reshape(-1, 4).t() @ x.detach().reshape(-1, 7), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(layer.bias.grad, g.reshape(-1, 4).sum(0), rtol=1e-5, atol=1e-6)


def test_gradcheck_with_feedback_equal_to_weight():
    torch.manual_seed(4)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)

    def conv(x, weight, bias):
        return FeedbackConv2dFunction.apply(
            x, weight, bias, lambda w: w, None, (2, 1), (1, 1), (1, 2), 2
        )

    assert torch.autograd.gradcheck(conv, (x, weight, bias))

    xl = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    wl = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    bl = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def linear(x, weight, bias):
        return FeedbackLinearFunction.apply(x, weight, bias, lambda w: w, None)

    assert torch.autograd.gradcheck(linear, (xl, wl, bl))


@pytest.mark.parametrize("rule", ["fa", "sign_symmetry", "frsf"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_input_grad_is_linear_in_incoming_grad(rule, kind):
    torch.manual_seed(5)
    if kind == "conv":
        layer = FeedbackConv2d(3, 4, 3, stride=2, padding=1, rule=rule)
        x = torch.randn(2, 3, 7, 7, requires_grad=True)
    else:
        layer = FeedbackLinear(6, 3, rule=rule)
        x = torch.randn(4, 6, requires_grad=True)
    out = layer(x)
    g1, g2 = torch.randn_like(out), torch.randn_like(out)

    def grad_x(g):
        return torch.autograd.grad(out, x, g, retain_graph=True)[0]

    torch.testing.assert_close(
        grad_x(2.0 * g1 - 0.5 * g2), 2.0 * grad_x(g1) - 0.5 * grad_x(g2), rtol=1e-5, atol=1e-6
    )


def test_frozen_weight_still_uses_feedback_for_input_grad():
    torch.manual_seed(6)
    plain = nn.Conv2d(3, 4, 3, padding=1)
    layer = _converted_copy(plain, "sign_symmetry")
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    expected = input_grad_with_weight(plain, reference_feedback(layer), x, g)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is None


def test_trainable_feedback_receives_weight_grad_even_if_weight_is_frozen():
    torch.manual_seed(7)
    x = torch.randn(2, 3, 5, 5)
    weight = torch.randn(4, 3, 3, 3)
    feedback = torch.randn(4, 3, 3, 3, requires_grad=True)
    out = FeedbackConv2dFunction.apply(x, weight, None, feedback, None, (1, 1), (1, 1), (1, 1), 1)
    g = torch.randn_like(out)
    out.backward(g)
    plain_weight = weight.clone().requires_grad_(True)
    F.conv2d(x, plain_weight, padding=1).backward(g)
    torch.testing.assert_close(feedback.grad, plain_weight.grad)
