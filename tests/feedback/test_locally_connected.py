"""LocallyConnected2d: untied filters, tied by from_conv reproduce the conv; every rule's input
gradient is fold(B^T g) per position, checked against a loop over positions written here."""

import math

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import rounded_to_16_levels
from torch import nn

from signsym_det.feedback import (
    FeedbackLocallyConnected2d,
    LocallyConnected2d,
    available_rules,
    conversion_report,
    convert,
    strip,
)

INPUT = (7, 9)  # not square, so a swapped height and width shows


def reference_lc(x, weight, bias, stride=2, padding=1):
    """Independent forward: position (i, j) applies its own filters W[i, j] to its window."""
    x = F.pad(x, (padding,) * 4)
    height, width, _, _, kh, kw = weight.shape
    rows = []
    for i in range(height):
        row = []
        for j in range(width):
            window = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out = torch.einsum("ncab,ocab->no", window, weight[i, j])
            row.append(out if bias is None else out + bias[i, j])
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)


def reference_grads(weight, bias, x, g, feedback=None):
    """(dL/dx with ``feedback`` in W's place, dL/dW, dL/db) by autograd on reference_lc."""

    def grads(kernel):
        x_ = x.detach().clone().requires_grad_(True)
        w_ = kernel.detach().clone().requires_grad_(True)
        b_ = bias.detach().clone().requires_grad_(True)
        reference_lc(x_, w_, b_).backward(g)
        return x_.grad, w_.grad, b_.grad

    grad_x = grads(weight if feedback is None else feedback)[0]
    return (grad_x, *grads(weight)[1:])


def make_layer(seed=0):
    torch.manual_seed(seed)
    return LocallyConnected2d(3, 4, 3, stride=2, padding=1, input_size=INPUT)


def data(layer, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *INPUT, generator=generator)
    g = torch.randn(2, 4, *layer.geometry.output_size(), generator=generator)
    return x, g


def run(layer, x, g):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    out = layer(x)
    out.backward(g)
    return out, x.grad, layer.weight.grad, layer.bias.grad


def test_shapes_and_init_follow_conv2d():
    layer = make_layer()
    assert layer.geometry.output_size() == (4, 5)
    assert layer.weight.shape == (4, 5, 4, 3, 3, 3) and layer.bias.shape == (4, 5, 4)
    bound = 1 / math.sqrt(3 * 3 * 3)
    assert layer.weight.abs().max() <= bound and layer.weight.std() > bound / 3
    assert not torch.equal(layer.weight[0, 0], layer.weight[1, 1])  # untied


def test_from_conv_reproduces_the_conv_forward_and_backward():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    layer = LocallyConnected2d.from_conv(conv, INPUT)
    x, g = data(layer)
    out, grad_x, grad_w, grad_b = run(layer, x, g)
    x_ = x.clone().requires_grad_(True)
    conv_out = conv(x_)
    conv_out.backward(g)
    torch.testing.assert_close(out, conv_out)
    torch.testing.assert_close(grad_x, x_.grad)
    torch.testing.assert_close(grad_w.sum((0, 1)), conv.weight.grad)  # tied: sum over positions
    torch.testing.assert_close(grad_b.sum((0, 1)), conv.bias.grad)


@pytest.mark.parametrize("rule", ["bp", "sign_symmetry", "fa"])
def test_tied_feedback_layer_matches_the_feedback_conv_where_b_is_shared(rule):
    """With tied W, sign symmetry's B (xiao scale of the conv) and bp's B are the conv's."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    layer = convert(nn.Sequential(LocallyConnected2d.from_conv(conv, INPUT)), rule, scale="xiao")[0]
    conv = convert(nn.Sequential(conv), rule, scale="xiao")[0]
    x, g = data(layer)
    grad_x = run(layer, x, g)[1]
    x_ = x.clone().requires_grad_(True)
    conv(x_).backward(g)
    if rule == "fa":  # B is drawn per position: the gradients differ
        assert not torch.allclose(grad_x, x_.grad, atol=1e-3)
    else:
        torch.testing.assert_close(grad_x, x_.grad)


def test_plain_and_bp_gradients_equal_autograd_on_a_loop_over_positions():
    plain = make_layer()
    x, g = data(plain)
    expected = reference_grads(plain.weight, plain.bias, x, g)
    out, *grads = run(plain, x, g)
    torch.testing.assert_close(out, reference_lc(x, plain.weight, plain.bias))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    bp = FeedbackLocallyConnected2d(3, 4, 3, 2, 1, input_size=INPUT, rule="bp")
    bp.load_state_dict(plain.state_dict())
    for got, want in zip(run(bp, x, g)[1:], expected):
        torch.testing.assert_close(got, want)


def independent_feedback(layer):
    """B from the rules' definitions; the conv's xiao scale sqrt(2 / (kh * kw * C_out))."""
    weight = layer.weight.detach()
    c_out, kh, kw = weight.shape[2], weight.shape[4], weight.shape[5]
    xiao = math.sqrt(2 / (kh * kw * c_out))
    if layer.rule == "sign_symmetry":
        return torch.sign(weight) * xiao
    generator = torch.Generator().manual_seed(layer.feedback_seed)
    drawn = torch.randn(weight.shape, generator=generator) * xiao  # fa's draw,
    return rounded_to_16_levels(drawn)  # kept packed (the default)


@pytest.mark.parametrize("rule", ["fa", "sign_symmetry"])
def test_input_gradient_is_the_fold_of_g_times_the_layers_b(rule):
    layer = convert(nn.Sequential(make_layer()), rule, scale="xiao", seed=3)[0]
    x, g = data(layer)
    feedback = independent_feedback(layer)
    torch.testing.assert_close(layer.feedback_matrix(), feedback)
    expected = reference_grads(layer.weight, layer.bias, x, g, feedback)
    for got, want in zip(run(layer, x, g)[1:], expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("rule", available_rules())
def test_every_rule_uses_its_b_for_dx_and_backprop_for_dw(rule):
    layer = convert(nn.Sequential(make_layer()), rule, scale="xiao", seed=3)[0]
    assert isinstance(layer, FeedbackLocallyConnected2d) and layer.rule == rule
    x, g = data(layer)
    if "feedback_step" in layer._buffers:
        layer.advance_step()
    feedback = layer.feedback_matrix()
    assert feedback.shape == layer.weight.shape
    expected = reference_grads(layer.weight, layer.bias, x, g, feedback)
    for got, want in zip(run(layer, x, g)[1:], expected):
        torch.testing.assert_close(got, want)
    if rule == "kolen_pollack":  # the trained B receives dL/dW
        torch.testing.assert_close(layer.feedback_weight.grad, expected[1])


def test_state_dict_round_trip_and_seeds():
    model = convert(nn.Sequential(make_layer()), "fa", scale="xiao", seed=7)
    state = model.state_dict()
    assert set(state) == {"0.weight", "0.bias", "0.feedback_weight"}
    same = convert(nn.Sequential(make_layer(seed=5)), "fa", scale="xiao", seed=7)
    torch.testing.assert_close(same[0].feedback_matrix(), model[0].feedback_matrix())
    other = convert(nn.Sequential(make_layer(seed=5)), "fa", scale="xiao", seed=8)
    assert not torch.equal(other[0].feedback_matrix(), model[0].feedback_matrix())
    other.load_state_dict(state)  # another seed's layer takes the saved weights and B
    for key, value in state.items():
        torch.testing.assert_close(other.state_dict()[key], value)
    x, g = data(model[0])
    for got, want in zip(run(other[0], x, g), run(model[0], x, g)):
        torch.testing.assert_close(got, want)
    stored = convert(
        nn.Sequential(make_layer()), "fa", scale="xiao", seed=7, fixed_feedback="store"
    )
    assert torch.equal(rounded_to_16_levels(stored[0].feedback_weight), state["0.feedback_weight"])


def test_convert_report_and_strip():
    model = nn.Sequential(make_layer(), nn.Flatten(), nn.Linear(80, 2))
    convert(model, "sign_symmetry", overrides={"2": None})
    report = conversion_report(model)
    assert report.layers["0"].layer_type == "LocallyConnected2d" and report.plain == ["2"]
    strip(model)
    assert type(model[0]) is LocallyConnected2d and "feedback_weight" not in model.state_dict()


def test_bad_inputs_name_what_is_expected():
    layer = make_layer()
    with pytest.raises(ValueError, match=r"takes \(N, 3, 7, 9\) inputs, got \(1, 3, 9, 7\)"):
        layer(torch.zeros(1, 3, 9, 7))
    with pytest.raises(ValueError, match="groups=1 and padding_mode='zeros' only"):
        LocallyConnected2d(4, 4, 3, groups=2, input_size=8)
    with pytest.raises(ValueError, match="int padding"):
        LocallyConnected2d.from_conv(nn.Conv2d(3, 4, 3, padding="same"), 8)
