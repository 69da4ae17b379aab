"""Non-finite gradients are reported with the layer, rule and part where they started."""

import pytest
import torch
from torch import nn

from signsym_det import convert
from signsym_det.engine.nonfinite import (
    NonFiniteGradientError,
    first_nonfinite_layer,
    install_gradient_check,
)


def tiny_detector():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    model.head = nn.Sequential(nn.Conv2d(4, 4, 1))
    model.head.cls_score = nn.Conv2d(4, 2, 1)
    return convert(model, "sign_symmetry", overrides=[("head.cls_score", "none")])


def test_last_registered_nonfinite_layer_is_named():
    model = tiny_detector()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    assert first_nonfinite_layer(model) is None
    model.backbone[0].weight.grad[0, 0, 0, 0] = float("nan")
    model.head[0].weight.grad[0, 0, 0, 0] = float("inf")
    assert first_nonfinite_layer(model) == ("head.0", "sign_symmetry", "head")
    model.head.cls_score.weight.grad[1, 0, 0, 0] = float("nan")
    assert first_nonfinite_layer(model) == ("head.cls_score", "bp", "predictor")


def test_gradient_check_stops_before_the_step():
    model = tiny_detector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    install_gradient_check(optimizer, model, lambda: 7)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # finite: steps
    before = model.backbone[2].weight.detach().clone()
    model.backbone[2].weight.grad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match=r"iteration 7.*'backbone.2'.*backbone"):
        optimizer.step()
    assert torch.equal(model.backbone[2].weight, before)
