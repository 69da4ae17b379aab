"""Where B comes from: one source object per kind, read through explicit methods."""

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import xiao_scale
from torch import nn

from signsym_det.feedback import (
    FromWeight,
    PackedFixed,
    RegeneratedFixed,
    StoredFixed,
    Trained,
    convert,
)
from signsym_det.feedback.cache import LazyFeedback, TensorVersion


def _conv(rule, fixed_feedback="regenerate", seed=7):
    torch.manual_seed(0)
    return convert(
        nn.Conv2d(3, 4, 3, padding=1), rule, seed=seed, fixed_feedback=fixed_feedback, scale="xiao"
    )


@pytest.mark.parametrize(
    "rule, fixed_feedback, kind",
    [
        ("bp", "regenerate", FromWeight),
        ("sign_symmetry", "store", FromWeight),
        ("brsf", "regenerate", FromWeight),
        ("fa", "packed", PackedFixed),
        ("frsf", "packed", PackedFixed),
        ("fa", "regenerate", RegeneratedFixed),
        ("frsf", "regenerate", RegeneratedFixed),
        ("fa", "store", StoredFixed),
        ("frsf", "store", StoredFixed),
        ("kolen_pollack", "regenerate", Trained),
        ("kolen_pollack", "store", Trained),
    ],
)
def test_each_rule_gets_its_kind_of_source(rule, fixed_feedback, kind):
    layer = _conv(rule, fixed_feedback)
    assert type(layer.feedback_source) is kind
    registered = {**dict(layer.named_parameters()), **dict(layer.named_buffers())}
    assert ("feedback_weight" in registered) == (kind in (StoredFixed, Trained))
    assert ("feedback_codes" in registered) == (kind is PackedFixed)
    assert ("feedback_weight" in layer.state_dict()) == (rule in ("fa", "frsf", "kolen_pollack"))


def test_regenerated_state_is_an_independent_generator_draw_and_no_attribute():
    layer = _conv("fa", seed=13)
    generator = torch.Generator().manual_seed(layer.feedback_seed)
    expected = torch.randn(layer.weight.shape, generator=generator) * xiao_scale(layer.weight)
    assert torch.equal(layer.feedback_state(), expected)
    assert torch.equal(layer.feedback_matrix(), expected)
    assert torch.equal(layer.state_dict()["feedback_weight"], expected)
    assert not hasattr(layer, "feedback_weight")  # no attribute draws a W-sized tensor
    with pytest.raises(AttributeError):
        layer.feedback_weight


def test_stateless_and_stored_and_trained_states():
    assert _conv("sign_symmetry").feedback_state() is None
    stored = _conv("frsf", "store")
    assert stored.feedback_state() is stored.feedback_weight
    trained = _conv("kolen_pollack")
    assert trained.feedback_state() is trained.feedback_weight
    assert isinstance(trained.feedback_weight, nn.Parameter)
    # a trained B is the parameter itself, handed to the Function (so it receives dL/dW)
    assert trained.feedback_source.for_function(trained) is trained.feedback_weight


def test_a_foreign_tensor_switches_the_source_to_stored():
    layer = _conv("frsf", seed=1)
    foreign = torch.rand_like(layer.weight)
    layer.load_state_dict({"weight": layer.weight, "bias": layer.bias, "feedback_weight": foreign})
    assert type(layer.feedback_source) is StoredFixed
    assert torch.equal(layer.feedback_state(), foreign)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    g = torch.randn(1, 4, 5, 5)
    layer(x).backward(g)
    expected = foreign * torch.sign(layer.weight.detach())
    torch.testing.assert_close(x.grad, F.conv_transpose2d(g, expected, padding=1))


def test_lazy_sources_hand_one_lazy_feedback_per_iteration():
    layer = _conv("sign_symmetry")
    first = layer.feedback_source.for_function(layer)
    assert isinstance(first, LazyFeedback)
    assert layer.feedback_source.for_function(layer) is first  # same W: shared
    with torch.no_grad():
        layer.weight.mul_(2)
    assert layer.feedback_source.for_function(layer) is not first  # W changed in place


def test_tensor_version_follows_identity_and_in_place_changes():
    tensor = torch.zeros(3)
    key = TensorVersion(tensor)
    assert key.matches(tensor)
    assert not key.matches(tensor.clone())
    tensor.add_(1)
    assert not key.matches(tensor)
    assert not key.matches(None)
    del tensor
    assert key.tensor() is None  # held weakly


def test_a_user_state_that_is_not_compact_is_regenerated_exactly(monkeypatch):
    from signsym_det.feedback import FeedbackRule, register_rule
    from signsym_det.feedback import rules as rules_module

    monkeypatch.setattr(rules_module, "_RULES", dict(rules_module._RULES))
    monkeypatch.setattr(rules_module, "_ALIASES", dict(rules_module._ALIASES))

    def signs(weight, scale, generator):  # a +-1 state: 16-level rounding would change it
        draw = torch.randint(0, 2, weight.shape, generator=generator, device=generator.device)
        return draw.float() * 2 - 1

    rule = FeedbackRule(lambda w, state, s, n: state, state="buffer", init_state=signs)
    register_rule("random_signs", rule)
    layer = _conv("random_signs", "packed")
    assert type(layer.feedback_source) is RegeneratedFixed
    generator = torch.Generator().manual_seed(layer.feedback_seed)
    assert torch.equal(layer.feedback_matrix(), signs(layer.weight, None, generator))
    with pytest.raises(ValueError, match="compact_state needs state='buffer'"):
        FeedbackRule(lambda w, state, s, n: w, compact_state=True)
