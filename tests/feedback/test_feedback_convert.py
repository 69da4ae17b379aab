"""convert / strip / conversion_report and the rule registry."""

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import reference_feedback
from torch import nn

from signsym_det.feedback import (
    SCALES,
    FeedbackConv2d,
    FeedbackLinear,
    FeedbackRule,
    available_rules,
    conversion_report,
    convert,
    get_rule,
    register_rule,
    strip,
)
from signsym_det.feedback import rules as rules_module

BUILTIN_RULES = ["bp", "brsf", "fa", "frsf", "kolen_pollack", "sign_symmetry"]


class ListedConvs(nn.Module):
    """Keeps its convs in a plain Python list too and calls them from it, like detectron2's FPN."""

    def __init__(self):
        super().__init__()
        self.lateral = nn.Conv2d(3, 4, 1)
        self.output = nn.Conv2d(4, 4, 3, padding=1)
        self.convs = [self.lateral, self.output]

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return x


class TinyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, 2, 1)
        )
        self.upsample = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.temporal = nn.Conv1d(4, 4, 1)
        self.head = nn.ModuleDict(
            {
                "conv": nn.Conv2d(4, 4, 3, padding=1),
                "cls_score": nn.Linear(4, 5),
                "bbox": nn.Linear(4, 4),
            }
        )

    def forward(self, x):
        features = self.head["conv"](self.upsample(self.backbone(x)))
        pooled = self.temporal(features.mean(3)).mean(2)
        return self.head["cls_score"](pooled), self.head["bbox"](pooled)


def _rules_of(model):
    return {name: entry.rule for name, entry in conversion_report(model).layers.items()}


def test_registry_names_aliases_and_errors():
    assert available_rules() == BUILTIN_RULES
    assert get_rule("usf").name == "sign_symmetry"
    assert get_rule("KP").name == "kolen_pollack"
    with pytest.raises(ValueError) as error:
        get_rule("sgn")
    assert "'sgn'" in str(error.value)
    assert all(name in str(error.value) for name in BUILTIN_RULES)


def test_register_user_rule_and_clash(monkeypatch):
    monkeypatch.setattr(rules_module, "_RULES", dict(rules_module._RULES))
    monkeypatch.setattr(rules_module, "_ALIASES", dict(rules_module._ALIASES))
    doubled = FeedbackRule(lambda weight, state, scale, noise: 2 * weight, description="B = 2W")
    register_rule("doubled_bp", doubled, aliases=("dbp",))
    assert "doubled_bp" in available_rules()
    with pytest.raises(ValueError, match="doubled_bp"):
        register_rule("doubled_bp", doubled)
    with pytest.raises(ValueError, match="usf"):
        register_rule("other", doubled, aliases=("usf",))
    with pytest.raises(ValueError, match="none"):
        register_rule("none", doubled)

    torch.manual_seed(1)
    plain = nn.Conv2d(2, 3, 3)
    layer = convert(copy.deepcopy(plain), "dbp")
    assert layer.rule == "doubled_bp"
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(x.grad, F.conv_transpose2d(g, 2 * plain.weight.detach()))


def test_exclude_include_and_unsupported_report(caplog):
    model = TinyDetector()
    with caplog.at_level(logging.WARNING, logger="signsym_det.feedback.convert"):
        convert(model, "sign_symmetry", exclude=["*cls_score"])
    assert type(model.head["cls_score"]) is nn.Linear
    assert type(model.head["bbox"]) is FeedbackLinear
    assert type(model.backbone[3]) is FeedbackConv2d
    assert type(model.upsample) is nn.ConvTranspose2d
    assert "upsample" in caplog.text and "ConvTranspose2d" in caplog.text

    report = conversion_report(model)
    assert report.counts == {"sign_symmetry": 4}
    assert report.plain == ["head.cls_score"]
    assert set(report.unsupported) == {"upsample", "temporal"}
    assert "ConvTranspose2d" in report.unsupported["upsample"]
    text = str(report)
    for expected in (
        "backbone.0",
        "head.bbox",
        "sign_symmetry",
        "xiao",
        "upsample",
        "head.cls_score",
    ):
        assert expected in text

    head_only = convert(TinyDetector(), "fa", include=["head.*"], exclude="head.bbox")
    assert _rules_of(head_only) == {"head.conv": "fa", "head.cls_score": "fa"}


def test_overrides_first_match_wins_with_scales():
    model = convert(
        TinyDetector(),
        "usf",
        scale="unit",
        overrides=[
            ("head.cls_score", "none"),
            ("head.*", {"rule": "fa", "scale": 0.5}),
            ("backbone.3", {"scale": "weight_mean"}),
            ("*", "bp"),
        ],
    )
    report = conversion_report(model)
    assert type(model.head["cls_score"]) is nn.Linear
    assert {name: (entry.rule, entry.scale) for name, entry in report.layers.items()} == {
        "backbone.0": ("bp", None),
        "backbone.3": ("sign_symmetry", "weight_mean"),
        "head.conv": ("fa", 0.5),
        "head.bbox": ("fa", 0.5),
    }
    weight = model.backbone[3].weight.detach()
    expected = torch.sign(weight) * weight.abs().mean()
    torch.testing.assert_close(model.backbone[3].feedback_matrix(), expected)

    by_dict = convert(TinyDetector(), None, overrides={"head.conv": "frsf"})
    assert _rules_of(by_dict) == {"head.conv": "frsf"}


@pytest.mark.parametrize(
    "kwargs,bad,valid",
    [
        (dict(rule="sgn"), "sgn", BUILTIN_RULES),
        (dict(scale="huge"), "huge", SCALES),
        (dict(scale=-1.0), "-1.0", SCALES),
        (dict(overrides={"head.*": "fb"}), "fb", BUILTIN_RULES),
        (dict(overrides={"head.*": {"rule": "fa", "scale": 0}}), "0", SCALES),
        (dict(overrides={"head.*": {"rule": "fa", "lr": 1}}), "lr", ["rule", "scale"]),
    ],
)
def test_invalid_arguments_raise_before_any_change(kwargs, bad, valid):
    model = TinyDetector()
    with pytest.raises(ValueError) as error:
        convert(model, **kwargs)
    assert bad in str(error.value)
    assert all(name in str(error.value) for name in valid)
    assert conversion_report(model).layers == {}


def test_same_objects_parameters_and_state_dict_keys():
    model = TinyDetector()
    layers = {name: module for name, module in model.named_modules()}
    parameters = {name: id(parameter) for name, parameter in model.named_parameters()}
    keys = set(model.state_dict())

    returned = convert(model, "frsf")
    assert returned is model
    assert all(module is layers[name] for name, module in model.named_modules())
    assert {name: id(p) for name, p in model.named_parameters()} == parameters
    added = set(model.state_dict()) - keys
    assert keys <= set(model.state_dict())
    assert added == {
        f"{name}.feedback_weight" for name in ("backbone.0", "backbone.3", "head.conv")
    } | {
        "head.cls_score.feedback_weight",
        "head.bbox.feedback_weight",
    }


def test_layers_referenced_from_plain_lists_are_converted():
    torch.manual_seed(2)
    model = ListedConvs()
    reference = copy.deepcopy(model)
    convert(model, "sign_symmetry", scale="xiao")
    assert all(type(conv) is FeedbackConv2d for conv in model.convs)
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    out = model(x)
    assert torch.equal(out, reference(x))
    g = torch.randn_like(out)
    out.backward(g)
    lateral_g = F.conv_transpose2d(g, reference_feedback(model.output), padding=1)
    expected = F.conv_transpose2d(lateral_g, reference_feedback(model.lateral))
    torch.testing.assert_close(x.grad, expected)


def test_root_layer_inplace_false_and_already_converted_layers():
    conv = nn.Conv2d(2, 3, 3)
    converted = convert(conv, "fa")
    assert converted is conv and type(conv) is FeedbackConv2d

    model = TinyDetector()
    copied = convert(model, "fa", inplace=False)
    assert conversion_report(model).layers == {}
    assert copied.head["conv"].weight is not model.head["conv"].weight
    assert torch.equal(copied.head["conv"].weight, model.head["conv"].weight)

    feedback = copied.head["conv"].feedback_state().clone()
    convert(copied, "sign_symmetry")
    assert copied.head["conv"].rule == "fa"
    assert torch.equal(copied.head["conv"].feedback_state(), feedback)


class CustomForwardConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


class InheritedForwardConv(nn.Conv2d):
    pass


def test_subclasses_custom_forward_reported_inherited_forward_restored():
    model = nn.Sequential(CustomForwardConv(2, 2, 1), InheritedForwardConv(2, 2, 1))
    convert(model, "fa")
    assert type(model[0]) is CustomForwardConv
    assert "own forward" in conversion_report(model).unsupported["0"]
    assert type(model[1]) is FeedbackConv2d
    strip(model)
    assert type(model[1]) is InheritedForwardConv


@pytest.mark.parametrize("rule", ["brsf", "kolen_pollack", "sign_symmetry"])
def test_strip_restores_classes_keys_and_outputs(rule):
    model = TinyDetector()
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    parameters = [id(p) for p in model.parameters()]
    convert(model, rule)

    stripped_copy = strip(model, inplace=False)
    assert conversion_report(model).layers != {}
    assert list(stripped_copy.state_dict()) == keys

    assert strip(model) is model
    assert list(model.state_dict()) == keys
    assert [id(p) for p in model.parameters()] == parameters
    for (name, module), (_, original) in zip(model.named_modules(), reference.named_modules()):
        assert type(module) is type(original), name
        assert "rule" not in vars(module) and "_plain_class" not in vars(module)
    assert all(not module._forward_pre_hooks for module in model.modules())
    x = torch.randn(2, 3, 8, 8)
    for out, expected in zip(model(x), reference(x)):
        assert torch.equal(out, expected)


def test_prefix_names_a_part_as_in_the_whole_model():
    whole = convert(TinyDetector(), "fa", seed=3, exclude="backbone.*")
    part = TinyDetector()
    convert(part.head, "fa", seed=3, prefix="head.", include=["head.conv", "head.bbox"])
    assert _rules_of(part.head) == {"conv": "fa", "bbox": "fa"}
    assert torch.equal(part.head["conv"].feedback_state(), whole.head["conv"].feedback_state())
    assert torch.equal(part.head["bbox"].feedback_state(), whole.head["bbox"].feedback_state())
