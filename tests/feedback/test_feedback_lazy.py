"""B made from W is made once per iteration, shared by a layer's calls, and not kept after."""

import copy
import pickle

import torch
import torch.nn.functional as F
from feedback_reference import reference_feedback
from torch import nn

from signsym_det.feedback import convert
from signsym_det.feedback.cache import LazyFeedback

CALLS = []


def _counting(net):
    """The net's conv on sign symmetry, recording each time its B is made."""
    convert(net, "sign_symmetry", scale="xiao")
    source = net.conv.feedback_source
    make = source.make

    def counted(*args):
        CALLS.append(1)
        return make(*args)

    source.make = counted
    return net


class Shared(nn.Module):
    """One conv applied to three inputs (RetinaNet's head over FPN levels)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, xs):
        return [self.conv(x) for x in xs]


def reference(weight):
    c_out, _, kh, kw = weight.shape
    return torch.sign(weight) * (2.0 / (c_out * kh * kw)) ** 0.5


def _inputs(n=3):
    return [torch.randn(1, 2, 5, 5, requires_grad=True) for _ in range(n)]


def _step(net, xs, optimizer=None):
    outs = net(xs)
    grads = [torch.randn_like(out) for out in outs]
    sum((out * g).sum() for out, g in zip(outs, grads)).backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad()
    return grads


def test_feedback_made_once_per_iteration_for_a_shared_layer():
    torch.manual_seed(0)
    net = _counting(Shared())
    optimizer = torch.optim.SGD(net.parameters(), lr=10.0)
    CALLS.clear()
    xs = _inputs()
    weight = net.conv.weight.detach().clone()
    grads = _step(net, xs)
    assert len(CALLS) == 1
    for x, g in zip(xs, grads):
        torch.testing.assert_close(x.grad, F.conv_transpose2d(g, reference(weight), padding=1))
    assert net.conv.feedback_source.lazy.value is None  # not held after the last backward
    optimizer.step()
    optimizer.zero_grad()
    CALLS.clear()
    xs = _inputs()
    weight = net.conv.weight.detach().clone()
    grads = _step(net, xs)
    assert len(CALLS) == 1  # made anew from the updated W
    for x, g in zip(xs, grads):
        torch.testing.assert_close(x.grad, F.conv_transpose2d(g, reference(weight), padding=1))


def test_feedback_follows_in_place_changes_and_replaced_weights():
    torch.manual_seed(1)
    net = convert(Shared(), "sign_symmetry", scale="xiao")
    _step(net, _inputs(2))
    with torch.no_grad():
        net.conv.weight.neg_()
    xs = _inputs(2)
    grads = _step(net, xs)
    expected = reference_feedback(net.conv)
    torch.testing.assert_close(xs[0].grad, F.conv_transpose2d(grads[0], expected, padding=1))
    net.conv.weight = nn.Parameter(torch.randn_like(net.conv.weight))
    xs = _inputs(2)
    grads = _step(net, xs)
    expected = reference_feedback(net.conv)
    torch.testing.assert_close(xs[1].grad, F.conv_transpose2d(grads[1], expected, padding=1))


def test_retained_graph_second_backward_remakes_feedback():
    torch.manual_seed(2)
    net = _counting(Shared())
    CALLS.clear()
    xs = _inputs(2)
    loss = sum(out.sum() for out in net(xs))
    loss.backward(retain_graph=True)
    first = [x.grad.clone() for x in xs]
    loss.backward()
    # Once for the first backward; the second finds no pending use and remakes B per call.
    assert len(CALLS) == 3
    for x, grad in zip(xs, first):
        torch.testing.assert_close(x.grad, 2 * grad)


def test_brsf_keeps_no_noise_between_iterations():
    torch.manual_seed(3)
    net = convert(Shared(), "brsf", seed=4, scale="xiao")
    xs = _inputs()
    grads = _step(net, xs)
    source = net.conv.feedback_source
    assert set(vars(source)) == {"lazy"}  # no noise kept
    assert source.lazy.value is None
    expected = reference_feedback(net.conv)
    for x, g in zip(xs, grads):
        torch.testing.assert_close(x.grad, F.conv_transpose2d(g, expected, padding=1))


def test_kolen_pollack_shared_layer_grads_equal_but_not_aliased():
    torch.manual_seed(5)
    net = convert(Shared(), "kolen_pollack", seed=1, scale="xiao")
    conv = net.conv
    for _ in range(2):  # second pass: both grads accumulate in place
        _step(net, _inputs())
        assert conv.feedback_weight.grad is not conv.weight.grad
        assert conv.feedback_weight.grad.data_ptr() != conv.weight.grad.data_ptr()
        torch.testing.assert_close(conv.feedback_weight.grad, conv.weight.grad)
    conv.weight.grad.zero_()
    assert conv.feedback_weight.grad.abs().sum() > 0


def test_layers_with_lazy_feedback_copy_and_pickle():
    torch.manual_seed(6)
    net = convert(Shared(), "sign_symmetry", scale="xiao")
    xs = _inputs()
    net(xs)  # forward only: the LazyFeedback has pending uses
    clone = copy.deepcopy(net)
    restored = pickle.loads(pickle.dumps(net))
    for other in (clone, restored):
        assert isinstance(other.conv.feedback_source.lazy, LazyFeedback)
        xs = _inputs()
        grads = _step(other, xs)
        expected = reference_feedback(other.conv)
        torch.testing.assert_close(xs[0].grad, F.conv_transpose2d(grads[0], expected, padding=1))


def test_autocast_casts_weight_once_per_iteration_for_a_shared_layer():
    torch.manual_seed(7)
    net = convert(Shared(), "kolen_pollack", seed=2, scale="xiao")
    reference = copy.deepcopy(net)
    xs = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = net(xs)
    saved = [out.grad_fn.saved_tensors for out in outs]
    assert len({tensors[1].data_ptr() for tensors in saved}) == 1  # one bf16 W for 3 calls
    assert len({tensors[2].data_ptr() for tensors in saved}) == 1  # one bf16 B
    assert saved[0][1].dtype == torch.bfloat16
    del saved
    sum(out.float().sum() for out in outs).backward()
    assert net.conv._autocast_casts["weight"][1]() is None  # freed with the graph

    reference.conv._autocast_casts = None  # the uncached path: one cast per call
    ref_xs = [x.detach().clone().requires_grad_(True) for x in xs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_outs = reference(ref_xs)
    sum(out.float().sum() for out in ref_outs).backward()
    for x, ref_x in zip(xs, ref_xs):
        torch.testing.assert_close(x.grad, ref_x.grad)
    for name in ("weight", "bias", "feedback_weight"):
        torch.testing.assert_close(
            getattr(net.conv, name).grad, getattr(reference.conv, name).grad, rtol=2e-2, atol=2e-2
        )
