"""A deformable-conv (DCN) ResNet backbone (MODEL.RESNETS.DEFORM_ON_PER_STAGE) under a rule.

``convert`` leaves detectron2's DeformConv layers as they are and reports them unsupported; the
ordinary convs around them, their offset convs included, get the rule. On CPU detectron2's
DeformConv computes its forward with torchvision.ops.deform_conv2d but has no backward
(NotImplementedError), so the backward tests put torchvision's op, which has one, in its
place: the same forward, with autograd.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.layers import deform_conv as d2_deform_conv
from detectron2.modeling.backbone import build_resnet_backbone
from detectron2_ops_marks import needs_deform_conv
from torch import nn

import signsym_det
from signsym_det.feedback.convert import conversion_report

pytestmark = needs_deform_conv
DEFORM_STAGES = ("res4", "res5")  # DEFORM_ON_PER_STAGE below
BLOCKS = {"res4": 6, "res5": 3}  # R50


def dcn_backbone(seed: int = 0) -> nn.Module:
    """A narrow R50 whose res4/res5 3x3 convs are deformable (not modulated: the CPU forward
    supports only that)."""
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, True, True]
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # every layer trains
    torch.manual_seed(seed)
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def torchvision_deform_conv(
    x, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1, *_
):
    """detectron2's CPU forward of DeformConv (groups and deformable_groups 1), differentiable."""
    assert groups == deformable_groups == 1
    return torchvision.ops.deform_conv2d(
        x, offset, weight, stride=stride, padding=padding, dilation=dilation
    )


def gradients(model: nn.Module) -> dict:
    model.zero_grad()
    model(images())["res5"].square().mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_convert_leaves_deform_convs_plain_and_reports_them(caplog):
    model = dcn_backbone()
    deform = [n for n, m in model.named_modules() if isinstance(m, d2_deform_conv.DeformConv)]
    assert deform == [f"{s}.{i}.conv2" for s in DEFORM_STAGES for i in range(BLOCKS[s])]
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert {f"{name}_offset" for name in deform} <= convs

    with caplog.at_level(logging.WARNING, logger="signsym_det"):
        signsym_det.convert(model, rule="fa", seed=0)
    report = conversion_report(model)
    assert set(report.unsupported) == set(deform)
    assert all("DeformConv" in reason for reason in report.unsupported.values())
    assert set(report.layers) == convs and report.plain == []
    assert {entry.rule for entry in report.layers.values()} == {"fa"}
    assert all(
        type(m) is d2_deform_conv.DeformConv for n, m in model.named_modules() if n in deform
    )
    assert "left as they are" in caplog.text and "res5.2.conv2 (" in caplog.text


def test_forward_on_cpu_and_detectron2s_missing_cpu_backward():
    model = signsym_det.convert(dcn_backbone(), rule="sign_symmetry", seed=0)
    out = model(images())["res5"]
    assert out.shape == (2, 256, 2, 2) and torch.isfinite(out).all()
    with pytest.raises(NotImplementedError, match="not supported on CPUs"):
        out.sum().backward()


def test_stand_in_gives_the_same_forward(monkeypatch):
    model = dcn_backbone()
    with torch.no_grad():
        expected = model(images())["res5"]
        monkeypatch.setattr(d2_deform_conv, "deform_conv", torchvision_deform_conv)
        assert torch.equal(model(images())["res5"], expected)


def test_backward_bp_matches_autograd_and_fa_changes_only_the_feedback(monkeypatch):
    monkeypatch.setattr(d2_deform_conv, "deform_conv", torchvision_deform_conv)
    reference = gradients(dcn_backbone())  # the unconverted model: plain autograd
    bp = gradients(signsym_det.convert(dcn_backbone(), rule="bp"))
    fa = gradients(signsym_det.convert(dcn_backbone(), rule="fa", seed=0))
    assert set(reference) == set(bp) == set(fa)
    for name, grad in reference.items():
        assert torch.allclose(bp[name], grad, rtol=1e-4, atol=1e-7), name
        assert torch.isfinite(fa[name]).all(), name
    # the last conv's dL/dW sees no feedback matrix; everything below it does
    last = "res5.2.conv3.weight"
    assert torch.allclose(fa[last], reference[last], rtol=1e-4, atol=1e-7)
    for name in ("stem.conv1.weight", "res4.0.conv2.weight", "res4.0.conv2_offset.weight"):
        assert fa[name].abs().sum() > 0, name
        assert not torch.allclose(fa[name], reference[name], rtol=1e-2, atol=1e-6), name
