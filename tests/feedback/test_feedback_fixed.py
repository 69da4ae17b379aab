"""fa/frsf's fixed feedback: packed in 4 bits (default), regenerated from the seed or stored."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import fixed_state, rounded_to_16_levels, xiao_scale
from torch import nn

from signsym_det.feedback import FeedbackLayer, convert, sources

FIXED_RULES = ("fa", "frsf")


def _net(rule, fixed_feedback=None, seed=3):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    options = {} if fixed_feedback is None else {"fixed_feedback": fixed_feedback}
    return convert(net, rule, seed=seed, scale="xiao", **options)


def _draw(layer, rule):
    """The documented draw N(0, 1) * s (|.| for frsf), CPU generator seeded by the layer."""
    generator = torch.Generator().manual_seed(layer.feedback_seed)
    drawn = torch.randn(layer.weight.shape, generator=generator) * xiao_scale(layer.weight)
    return drawn if rule == "fa" else drawn.abs()


def _saved_and_loaded(net, target):
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    result = target.load_state_dict(torch.load(buffer, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys
    return target


@pytest.mark.parametrize("rule", FIXED_RULES)
def test_packed_by_default_is_the_draw_rounded_to_16_levels_in_4_bits(rule):
    net = _net(rule)
    layer = net[2]
    codes = layer._buffers["feedback_codes"]
    assert "feedback_weight" not in layer._buffers and codes.dtype == torch.uint8
    assert codes.numel() == (layer.weight.numel() + 1) // 2  # 4 bits a weight
    drawn = _draw(layer, rule)
    state = layer.feedback_state()
    assert torch.equal(state, rounded_to_16_levels(drawn))
    assert state.unique().numel() <= 16
    assert torch.nn.functional.cosine_similarity(state.flatten(), drawn.flatten(), 0) > 0.99
    torch.testing.assert_close(state.square().mean(), drawn.square().mean())  # same rms
    assert torch.equal(net.state_dict()["2.feedback_weight"], state)  # saved as float
    assert "2.feedback_codes" not in net.state_dict()
    # dL/dx of the last layer: conv_transpose2d(g, B) with that B (frsf: times sign(W))
    h, g = torch.randn(2, 8, 6, 6, requires_grad=True), torch.randn(2, 4, 6, 6)
    layer(h).backward(g)
    feedback = state if rule == "fa" else state * torch.sign(layer.weight.detach())
    torch.testing.assert_close(h.grad, F.conv_transpose2d(g, feedback, padding=1))


@pytest.mark.parametrize("rule", FIXED_RULES)
def test_packed_checkpoints_reload_bit_for_bit_and_older_float_states_load(rule):
    packed = _net(rule)
    reloaded = _saved_and_loaded(packed, _net(rule))
    assert "feedback_codes" in reloaded[2]._buffers  # still packed
    assert torch.equal(reloaded[2].feedback_state(), packed[2].feedback_state())
    for fixed_feedback in ("regenerate", "store"):  # today's checkpoints: the exact draw
        older = _net(rule, fixed_feedback)
        loaded = _saved_and_loaded(older, _net(rule))
        layer = loaded[2]
        assert "feedback_codes" not in layer._buffers and "feedback_weight" in layer._buffers
        assert torch.equal(layer.feedback_state(), _draw(layer, rule))
        x, g = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 6, 6)
        torch.testing.assert_close(_input_grad(loaded, x, g), _input_grad(older, x, g))
    back = _saved_and_loaded(packed, _net(rule, "regenerate"))  # and the other way round
    assert torch.equal(back[2].feedback_state(), packed[2].feedback_state())


@pytest.mark.parametrize("rule", ["fa", "frsf"])
def test_zero_initialised_weight_packs_an_exact_zero_feedback(rule):
    """scale "auto" on an un-normalised zero-initialised conv (e.g. a deformable offset conv) is
    std(W) = 0: B is all zeros, so no error reaches the input."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    nn.init.zeros_(conv.weight)
    layer = convert(conv, rule)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    grad_out = torch.randn(2, 4, 6, 6)
    layer(x).backward(grad_out)
    expected = F.conv_transpose2d(grad_out, torch.zeros(4, 3, 3, 3), padding=1)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
    assert layer.state_dict()["feedback_weight"].abs().sum() == 0


def test_packed_codes_follow_the_layer_and_go_with_strip():
    net = _net("fa").to(torch.float64)
    layer = net[2]
    assert layer._buffers["feedback_codes"].dtype == torch.uint8
    assert layer.feedback_state().dtype == torch.float64
    twin = copy.deepcopy(net)
    assert torch.equal(twin[2].feedback_state(), layer.feedback_state())
    from signsym_det.feedback import strip

    strip(net)
    assert not hasattr(net[2], "feedback_codes") and type(net[2]) is nn.Conv2d


def _input_grad(net, x, g):
    x = x.clone().requires_grad_(True)
    net(x).backward(g)
    return x.grad


def _registered_bytes(module):
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("rule", FIXED_RULES)
def test_regenerated_feedback_is_the_documented_draw_and_stays_fixed(rule):
    net = _net(rule, "regenerate")
    layer = net[2]
    assert "feedback_weight" not in layer._buffers  # nothing W-sized is kept
    generator = torch.Generator().manual_seed(layer.feedback_seed)
    scale = (2.0 / (9 * 4)) ** 0.5
    drawn = torch.randn(layer.weight.shape, generator=generator) * scale
    expected = drawn if rule == "fa" else drawn.abs()
    assert torch.equal(layer.feedback_state(), expected)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):  # W changes, the fixed tensor does not
        optimizer.zero_grad()
        net(torch.randn(2, 3, 6, 6)).square().sum().backward()
        optimizer.step()
    assert torch.equal(layer.feedback_state(), expected)


@pytest.mark.parametrize("rule", FIXED_RULES)
def test_regenerate_and_store_give_the_same_gradients_and_state_dict(rule):
    regenerated, stored = _net(rule, "regenerate"), _net(rule, "store")
    assert "feedback_weight" in stored[2]._buffers
    assert _registered_bytes(stored) - _registered_bytes(regenerated) == sum(
        4 * m.weight.numel() for m in stored.modules() if isinstance(m, FeedbackLayer)
    )
    x, g = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(_input_grad(regenerated, x, g), _input_grad(stored, x, g))
    # the last layer's dL/dx by its definition: conv_transpose2d(g, B) with the stored B
    h = torch.randn(2, 8, 6, 6, requires_grad=True)
    regenerated[2](h).backward(g)
    sign = torch.sign(stored[2].weight.detach())
    state = stored[2].feedback_state()
    feedback = state if rule == "fa" else state * sign
    torch.testing.assert_close(h.grad, F.conv_transpose2d(g, feedback, padding=1))
    mine, theirs = regenerated.state_dict(), stored.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("rule", FIXED_RULES)
def test_checkpoint_round_trip_keeps_regenerating(rule):
    source = _net(rule, "regenerate")
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    target = _net(rule, "regenerate")
    assert not target.load_state_dict(state).missing_keys
    assert all("feedback_weight" not in m._buffers for m in target.modules())


@pytest.mark.parametrize("rule", FIXED_RULES)
def test_a_tensor_the_seed_does_not_draw_is_stored_and_used(rule):
    source = _net(rule, "store", seed=11)  # e.g. pretrained under other layer names
    target = _net(rule, "regenerate", seed=3)
    target.load_state_dict(source.state_dict())
    layer = target[2]
    assert "feedback_weight" in layer._buffers
    assert torch.equal(layer.feedback_state(), source[2].feedback_state())
    torch.testing.assert_close(layer.feedback_state(), fixed_state(source[2]))
    x, g = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(_input_grad(target, x, g), _input_grad(source, x, g))


def test_missing_and_misshapen_fixed_feedback_are_reported():
    source = _net("fa", "store")
    state = source.state_dict()
    del state["2.feedback_weight"]
    result = _net("fa", "regenerate").load_state_dict(state, strict=False)
    assert result.missing_keys == ["2.feedback_weight"]
    state["2.feedback_weight"] = torch.zeros(5)
    with pytest.raises(RuntimeError, match="size mismatch for 2.feedback_weight"):
        _net("fa", "regenerate").load_state_dict(state)


def test_regenerated_feedback_is_drawn_once_per_layer_per_iteration(monkeypatch):
    layer = _net("fa", "regenerate")[2]
    draws = []
    original = sources.draw_state
    monkeypatch.setattr(sources, "draw_state", lambda *args: draws.append(1) or original(*args))
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    sum(layer(x * k).sum() for k in (1.0, 2.0, 3.0)).backward()  # one layer, three calls
    assert len(draws) == 1


def test_copies_and_strip_of_regenerating_layers():
    net = _net("frsf", "regenerate")
    twin = copy.deepcopy(net)
    assert torch.equal(twin[0].feedback_state(), net[0].feedback_state())
    from signsym_det.feedback import strip

    strip(net)
    assert type(net[0]) is nn.Conv2d
    assert not hasattr(net[0], "feedback_weight")
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_bad_fixed_feedback_names_the_choices():
    with pytest.raises(ValueError, match=r"'keep'.*packed, regenerate, store"):
        _net("fa", "keep")
