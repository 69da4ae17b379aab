"""Every packaged LazyConfig loads and builds on the CPU with the rules it names."""

import pytest
from detectron2.config import LazyConfig, instantiate
from torch import nn

from signsym_det.feedback import conversion_report
from signsym_det.model_zoo import CONFIG_ROOT, available_configs

CONFIGS = [name for name in available_configs() if name.endswith(".py") and "/common/" not in name]


def load(name, overrides=()):
    return LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG_ROOT / name)), list(overrides))


def convertible(model):
    """Names of the model's Conv2d/Linear layers, found without the code under test."""
    return {
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not type(m).__name__.startswith("Deform")
    }


def test_configs_found():
    assert {
        "Lazy/Shapes-Demo/retinanet_R_18_FPN.py",
        "Lazy/COCO-Detection/retinanet_R_50_FPN_1x.py",
        "Lazy/COCO-Detection/fcos_R_50_FPN_1x.py",
        "Lazy/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py",
    } <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_with_its_rule(name):
    cfg = load(name)
    for key in ("model", "optimizer", "lr_multiplier", "dataloader", "train"):
        assert key in cfg, f"{name} has no {key}"
    model = instantiate(cfg.model)
    report = conversion_report(model)
    rule = cfg.model.feedback.rule
    assert set(report.counts) == {rule}
    layers = convertible(model)
    if "mask_rcnn" in name:  # only the backbone (ResNet body + FPN) is rule-swapped
        assert set(report.layers) == {n for n in layers if n.startswith("backbone.")}
        assert report.layers and any(not n.startswith("backbone.") for n in layers)
    else:
        assert set(report.layers) == layers


def test_shapes_config_sizes_and_scales():
    cfg = load("Lazy/Shapes-Demo/retinanet_R_18_FPN.py")
    assert cfg.dataloader.train.dataset.names == "shapes_train"
    model = instantiate(cfg.model)
    # the head's ${..num_classes}: 6 classes x 9 anchors
    assert model.head.cls_score.out_channels == 6 * 9
    assert model.backbone.bottom_up.res2[0].conv1.weight.shape[0] == 64  # basic blocks
    report = conversion_report(model)
    assert report.layers["backbone.bottom_up.stem.conv1"].scale == "xiao"
    assert report.layers["backbone.fpn_lateral3"].scale == "weight_mean"
    assert report.layers["head.cls_subnet.0"].scale == "weight_mean"
    assert report.layers["head.cls_score"].scale == "weight_mean"


@pytest.mark.parametrize("rule", ["fa", "bp", "kolen_pollack"])
def test_command_line_override_changes_the_rule(rule):
    cfg = load("Lazy/Shapes-Demo/retinanet_R_18_FPN.py", [f"model.feedback.rule={rule}"])
    assert cfg.train.output_dir.endswith(f"shapes_{rule}")  # ${model.feedback.rule}
    assert set(conversion_report(instantiate(cfg.model)).counts) == {rule}


def test_command_line_part_override():
    overrides = ["model.feedback.parts.predictor.rule=bp", "model.feedback.parts.fpn.scale=unit"]
    model = instantiate(load("Lazy/Shapes-Demo/retinanet_R_18_FPN.py", overrides).model)
    layers = conversion_report(model).layers
    assert layers["head.cls_score"].rule == "bp"
    assert layers["head.bbox_pred"].rule == "bp"
    assert layers["head.cls_subnet.0"].rule == "sign_symmetry"
    assert layers["backbone.fpn_output4"].scale == "unit"
