"""The demo: its quick config trains, its closing summary names the files, and end to end
(tools/demo.py on a tiny generated shapes set) it writes them."""

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from signsym_det.data.shapes import resolve_params
from signsym_det.demo import DEFAULT_CONFIG, FULL_CONFIG, summary
from signsym_det.engine import FeedbackTrainer, setup_cfg
from signsym_det.model_zoo import get_config_file


def test_summary_names_every_file_and_the_longer_run():
    text = summary("TABLE", 7.25, 900, "out", "out/curves.png", "out/boxes.png", "LONGER CMD")
    assert "TABLE" in text and "900 iterations" in text and "7.2 min" in text
    for path in ("out/results.md", "out/curves.png", "out/boxes.png"):
        assert path in text
    assert text.rstrip().endswith("LONGER CMD")
    assert "longer run" not in summary("T", 1.0, 1, "o", "c", "b")


def _quick_cfg():
    """The demo's default config, without datasets (nothing registered or generated)."""
    return setup_cfg(
        get_config_file(DEFAULT_CONFIG), ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    )


def _batch(size, num_classes):
    """Two images with two boxes each, boxes inside the image."""
    generator = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        instances = Instances((size, size))
        boxes = [[8.0, 10.0, 30.0, 34.0], [40.0, 20.0, 80.0, 61.0]]
        instances.gt_boxes = Boxes(torch.tensor(boxes))
        instances.gt_classes = torch.tensor([0, num_classes - 1])
        image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
        batch.append({"image": image, "instances": instances})
    return batch


def test_quick_config_trains_two_iterations(one_torch_thread):
    cfg = _quick_cfg()
    model = FeedbackTrainer.build_model(cfg)
    optimizer = FeedbackTrainer.build_optimizer(cfg, model)
    weight = model.head.cls_score.weight
    before = weight.detach().clone()
    size = max(cfg.INPUT.MIN_SIZE_TRAIN)
    batch = _batch(size, cfg.MODEL.RETINANET.NUM_CLASSES)
    with EventStorage():
        for _ in range(2):
            losses = model(batch)
            total = sum(losses.values())
            assert math.isfinite(float(total.detach())), losses
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    assert not torch.equal(weight.detach(), before)


def test_quick_config_anchors_cover_the_shapes_objects():
    """At the demo's input size the smallest anchor is at most 1.5x the shapes set's smallest
    object and the largest reaches its largest (object sizes: the generator's defaults)."""
    cfg = _quick_cfg()
    shapes = resolve_params()
    scale = max(cfg.INPUT.MIN_SIZE_TRAIN) / shapes["image_size"]
    sizes = [s for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES for s in level]
    assert len(cfg.MODEL.ANCHOR_GENERATOR.SIZES) == len(cfg.MODEL.RETINANET.IN_FEATURES)
    assert min(sizes) <= 1.5 * shapes["min_size"] * scale
    assert max(sizes) >= shapes["max_size"] * scale


@pytest.mark.slow
def test_demo_writes_table_plots_and_summary(tmp_path, tiny_shapes_env, tiny_run, run_tool):
    out = tmp_path / "demo"
    log = run_tool(tiny_shapes_env, "tools/demo.py", "--output-dir", str(out), *tiny_run)
    for name in ("results.md", "predictions.png", "training_curves.png", "model_final.pth"):
        assert (out / name).is_file(), name
        assert str(out / name) in log or name == "model_final.pth"
    assert "| shapes_val |" in (out / "results.md").read_text()
    assert "ETA" in log and "eta:" in log  # the plan line, then detectron2's progress lines
    assert f"--config-file {get_config_file(FULL_CONFIG)}" in log
