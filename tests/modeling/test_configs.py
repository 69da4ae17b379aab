"""Every YAML in configs/ builds on the CPU, and the R50 RetinaNet keeps stock's size."""

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from signsym_det import add_feedback_config
from signsym_det.config import validate_feedback_config
from signsym_det.feedback import FeedbackLayer

CONFIGS = sorted(
    str(p.relative_to(Path(__file__).parents[2]))
    for p in (Path(__file__).parents[2] / "configs").rglob("*.yaml")
    if not p.name.startswith("Base-")
)
ROOT = Path(__file__).parents[2]


def load_cfg(path, *opts):
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_file(str(ROOT / path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return validate_feedback_config(cfg)


def test_configs_found():
    assert len(CONFIGS) >= 12 + 2 + 6


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_a_converted_model(path):
    cfg = load_cfg(path)
    model = build_model(cfg)
    layers = [m for m in model.modules() if isinstance(m, FeedbackLayer)]
    assert layers, f"{path}: no layer was converted"
    assert {m.rule for m in layers} >= {cfg.MODEL.FEEDBACK.RULE}
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":  # backbone builder only: heads plain
        assert all(
            name.startswith("backbone.")
            for name, m in model.named_modules()
            if isinstance(m, FeedbackLayer)
        )


def stock_r50_retinanet_cfg():
    cfg = load_cfg("configs/COCO-Detection/retinanet_R_50_FPN_1x_bp.yaml")
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    return cfg


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["bp", "sign_symmetry", "fa", "frsf", "brsf", "kolen_pollack"])
def test_r50_retinanet_parameter_count(rule):
    cfg = load_cfg(f"configs/COCO-Detection/retinanet_R_50_FPN_1x_{rule}.yaml")
    model = build_model(cfg)
    feedback_params = sum(
        m.feedback_weight.numel()
        for m in model.modules()
        if isinstance(m, FeedbackLayer) and "feedback_weight" in m._parameters
    )
    assert (rule == "kolen_pollack") == (feedback_params > 0)
    # detectron2's own numbers for R50 RetinaNet (tests/modeling/test_model_analysis.py)
    assert count(model) - feedback_params == 37_915_572
    backbone_feedback = sum(
        m.feedback_weight.numel()
        for m in model.backbone.modules()
        if isinstance(m, FeedbackLayer) and "feedback_weight" in m._parameters
    )
    assert count(model.backbone) - backbone_feedback == 31_452_352


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["sign_symmetry", "fa", "kolen_pollack"])
def test_stock_checkpoint_loads_into_swapped_model(rule):
    stock_cfg = stock_r50_retinanet_cfg()
    torch.manual_seed(0)
    stock = build_model(stock_cfg)
    cfg = load_cfg(f"configs/COCO-Detection/retinanet_R_50_FPN_1x_{rule}.yaml")
    swapped = build_model(cfg)
    result = swapped.load_state_dict(stock.state_dict(), strict=False)
    assert result.unexpected_keys == []
    extra = set(swapped.state_dict()) - set(stock.state_dict())
    assert set(result.missing_keys) == extra
    assert (rule != "sign_symmetry") == bool(extra)
    assert all(k.endswith(".feedback_weight") for k in extra)
    swapped_state = swapped.state_dict()  # once: fa's state_dict() draws every B
    for key, value in stock.state_dict().items():
        assert torch.equal(swapped_state[key], value), key
