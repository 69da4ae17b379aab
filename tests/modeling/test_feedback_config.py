"""cfg.MODEL.FEEDBACK is checked by the same parser that convert() uses."""

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from signsym_det import add_feedback_config
from signsym_det.config import validate_feedback_config
from signsym_det.feedback import FeedbackLayer
from signsym_det.modeling.parts import convert_from_config


def feedback_cfg(**values):
    cfg = get_cfg()
    add_feedback_config(cfg)
    for key, value in values.items():
        node, _, name = key.rpartition("__")
        target = cfg.MODEL.FEEDBACK[node] if node else cfg.MODEL.FEEDBACK
        target[name] = value
    return cfg


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(RULE="sgn"), r"cfg.MODEL.FEEDBACK.RULE = 'sgn' is not a learning rule; valid: \["),
        (dict(HEAD__RULE="fb"), r"cfg.MODEL.FEEDBACK.HEAD.RULE = 'fb' .*'kolen_pollack'.*inherit"),
        (dict(SCALE="inf"), r"cfg.MODEL.FEEDBACK.SCALE = 'inf' is not a feedback scale; valid: "),
        (dict(FPN__SCALE="-1"), r"cfg.MODEL.FEEDBACK.FPN.SCALE = '-1' is not a feedback scale"),
        (dict(OVERRIDES=[["head.*", "bp", "big"]]), r"OVERRIDES\[0\] = 'big' .*'weight_mean'"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_choices(values, message):
    with pytest.raises(ValueError, match=message):
        validate_feedback_config(feedback_cfg(**values))


def test_numeric_scale_strings_and_plain_reach_convert():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    cfg = feedback_cfg(RULE="sign_symmetry", SCALE="0.5", OVERRIDES=[["2", "NONE"]])
    convert_from_config(net, validate_feedback_config(cfg))
    assert isinstance(net[0], FeedbackLayer) and net[0].scale == 0.5
    assert type(net[2]) is nn.Conv2d
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    g = torch.randn(1, 4, 5, 5)
    net[0](x).backward(g)
    expected = torch.sign(net[0].weight.detach()) * 0.5
    torch.testing.assert_close(x.grad, torch.nn.functional.conv_transpose2d(g, expected, padding=1))
