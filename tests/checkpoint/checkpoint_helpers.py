"""Shared helpers of the checkpoint tests: tiny detectors, tiny pretraining runs."""

from pathlib import Path

from detectron2.config import get_cfg
from detectron2.modeling import build_model

from signsym_det import add_feedback_config
from signsym_det.data.classification import generate_classification_dataset
from signsym_det.pretrain_net import main as pretrain_main

ROOT = Path(__file__).parents[2]
PREFIX = "backbone.bottom_up."


def retinanet(rule, depth=18, *opts):
    """The Shapes-Demo RetinaNet of ``rule`` (FPN width 32), built on the CPU."""
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_file(str(ROOT / f"configs/Shapes-Demo/retinanet_R_18_FPN_{rule}.yaml"))
    channels = 64 if depth < 50 else 256
    cfg.merge_from_list(
        ["MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.RES2_OUT_CHANNELS", channels]
        + ["MODEL.FPN.OUT_CHANNELS", 32, "MODEL.DEVICE", "cpu", *opts]
    )
    return build_model(cfg)


def tiny_classification_set(root):
    """12 train / 6 val images of 32 px: two per class and split."""
    return generate_classification_dataset(root, num_train=12, num_val=6, image_size=32)


def tiny_pretrain(tmp_path, rule, *extra):
    """tools/pretrain_net.py for 2 iterations; returns the output directory."""
    data = tmp_path / "cls"
    if not data.exists():
        tiny_classification_set(data)
    out = tmp_path / f"pretrain_{rule}"
    args = ["--data", str(data), "--output-dir", str(out), "--rule", rule, "--arch", "resnet18"]
    args += ["--image-size", "32", "--batch-size", "4", "--max-iter", "2", "--workers", "0"]
    args += ["--device", "cpu", "--lr", "0.01", "--log-period", "1", "--no-tensorboard"]
    pretrain_main([*args, *extra])
    return out
