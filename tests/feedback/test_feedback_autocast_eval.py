"""Autocast (CPU bfloat16) matches float32; eval / no_grad runs the plain op, no Function."""

import copy

import pytest
import torch
from feedback_reference import input_grad_with_weight, reference_feedback
from torch import nn

from signsym_det.feedback import convert
from signsym_det.feedback.function import FeedbackConv2dFunction, FeedbackLinearFunction


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, padding_mode="reflect"),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )


def _run(net, x, autocast):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out, [x.grad] + [p.grad for p in net.parameters()]


def _assert_close_relative_to_max(actual, expected, tolerance):
    scale = expected.abs().max()
    torch.testing.assert_close(actual / scale, expected / scale, rtol=0, atol=tolerance)


@pytest.mark.parametrize("rule", ["sign_symmetry", "fa", "kolen_pollack", "brsf"])
def test_cpu_bfloat16_autocast_matches_float32(rule):
    plain = _net()
    x = torch.randn(4, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_out = plain(x)
    net = convert(copy.deepcopy(plain), rule, seed=1)
    reference = copy.deepcopy(net)

    out, grads = _run(net, x, autocast=True)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, plain_out)
    reference_out, reference_grads = _run(reference, x, autocast=False)
    _assert_close_relative_to_max(out.float(), reference_out, 0.02)
    for grad, reference_grad in zip(grads, reference_grads):
        assert grad.dtype == torch.float32
        _assert_close_relative_to_max(grad, reference_grad, 0.1)  # plain autocast: up to ~0.08


def test_bp_under_autocast_equals_plain_autocast():
    plain = _net()
    x = torch.randn(4, 3, 8, 8)
    net = convert(copy.deepcopy(plain), "bp")
    _, grads = _run(net, x, autocast=True)
    _, plain_grads = _run(plain, x, autocast=True)
    for grad, plain_grad in zip(grads, plain_grads):
        _assert_close_relative_to_max(grad, plain_grad, 1e-6)


def test_eval_and_no_grad_run_the_plain_op():
    plain = _net()
    net = convert(copy.deepcopy(plain), "sign_symmetry")
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    plain.eval()
    with torch.no_grad():
        out = net(x)
    assert out.grad_fn is None and torch.equal(out, plain(x))

    out = net[0](x)  # grad enabled, input needs no grad: plain conv autograd (dL/dW is exact)
    assert type(out.grad_fn).__name__ == "ConvolutionBackward0"
    out = net[4](x.flatten(1)[:, :128])
    assert "FeedbackLinear" not in type(out.grad_fn).__name__

    hidden = torch.randn(2, 8, 8, 8, requires_grad=True)
    assert type(net[2](hidden).grad_fn).__name__ == "FeedbackConv2dFunctionBackward"


def test_eval_mode_with_grad_still_uses_feedback():
    plain = nn.Conv2d(3, 4, 3, padding=1)
    layer = convert(copy.deepcopy(plain), "sign_symmetry", scale="xiao").eval()
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    expected = input_grad_with_weight(plain, reference_feedback(layer), x, g)
    torch.testing.assert_close(x.grad, expected)


def test_no_grad_never_calls_the_functions(monkeypatch):
    calls = []
    for function in (FeedbackConv2dFunction, FeedbackLinearFunction):
        forward = function.forward

        def counting(ctx, *args, _forward=forward):
            calls.append(ctx)
            return _forward(ctx, *args)

        monkeypatch.setattr(function, "forward", staticmethod(counting))
    net = convert(_net(), "sign_symmetry")
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.no_grad():
        net(x)
    assert calls == []
    net(x)
    assert len(calls) == 3
