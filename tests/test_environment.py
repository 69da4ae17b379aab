"""The environment `make setup` builds: detectron2 imports, a stock RetinaNet trains and
infers on CPU, the compatibility fixes hold (the installer's own tests: tests/install/)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

# Not skipped when missing: `make setup` installs detectron2, and these tests check that.
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

# ------------------------------------------------------------------------------------------
# detectron2 itself
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.config",
        "detectron2.data",
        "detectron2.data.transforms",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.checkpoint",
        "detectron2.modeling",
        "detectron2.solver",
        "detectron2.utils.visualizer",
        "detectron2.model_zoo",
        "detectron2.export",
    ],
)
def test_detectron2_imports(module):
    importlib.import_module(module)


def test_model_zoo_configs_are_installed():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    assert Path(path).is_file()


def test_coco_evaluator_has_an_implementation():
    # without detectron2._C the fast evaluator must fall back to pycocotools' COCOeval
    from detectron2.evaluation import coco_evaluation

    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        from pycocotools.cocoeval import COCOeval

        assert coco_evaluation.COCOeval_opt is COCOeval


def test_lr_scheduler_hook_saves_torch_scheduler_state():
    # detectron2 v0.6 checked `_LRScheduler`, which torch 2.x schedulers no longer subclass,
    # so their state was silently dropped from checkpoints.
    from detectron2.engine.hooks import LRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    state = LRScheduler(opt, sched).state_dict()
    assert state.get("last_epoch") == 1


def test_pillow_and_numpy_compat():
    import numpy as np
    from detectron2.data.transforms import ExtentTransform
    from detectron2.structures.masks import polygons_to_bitmask

    img = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = ExtentTransform(src_rect=(0, 0, 16, 16), output_size=(8, 8)).apply_image(img)
    assert out.shape[:2] == (8, 8)
    mask = polygons_to_bitmask([np.array([1, 1, 10, 1, 10, 10, 1, 10], dtype=float)], 12, 12)
    assert mask.dtype == bool and mask.any()


# ------------------------------------------------------------------------------------------
# A stock RetinaNet R18-FPN on CPU
# ------------------------------------------------------------------------------------------

NUM_CLASSES = 3
IMAGE_SIZE = 64


def retinanet_r18_cfg():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # required for R18/R34
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [
        [s, s * 2 ** (1.0 / 3), s * 2 ** (2.0 / 3)] for s in (32, 64, 128, 256, 512)
    ]
    cfg.MODEL.RETINANET.NUM_CLASSES = NUM_CLASSES
    cfg.INPUT.MIN_SIZE_TRAIN = (IMAGE_SIZE,)
    cfg.INPUT.MAX_SIZE_TRAIN = IMAGE_SIZE
    cfg.INPUT.MIN_SIZE_TEST = IMAGE_SIZE
    cfg.INPUT.MAX_SIZE_TEST = IMAGE_SIZE
    return cfg


def random_instances(n: int, size: int, generator: torch.Generator) -> Instances:
    xy = torch.rand(n, 2, generator=generator) * (size / 2)
    wh = 8 + torch.rand(n, 2, generator=generator) * (size / 2 - 8)
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
    inst.gt_classes = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return inst


def batch(with_instances: bool, generator: torch.Generator) -> list[dict]:
    """Two images with random boxes and one with EMPTY instances."""
    out = []
    for n in (3, 1, 0):
        img = torch.randint(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE), generator=generator)
        d = {"image": img.to(torch.uint8), "height": IMAGE_SIZE, "width": IMAGE_SIZE}
        if with_instances:
            d["instances"] = random_instances(n, IMAGE_SIZE, generator)
        out.append(d)
    return out


@pytest.fixture(scope="module")
def retinanet():
    torch.manual_seed(0)
    return build_model(retinanet_r18_cfg())


def test_build_retinanet_r18_fpn(retinanet):
    assert type(retinanet).__name__ == "RetinaNet"
    assert retinanet.device.type == "cpu"
    assert list(retinanet.backbone.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
    assert len(retinanet.backbone.bottom_up.res2) == 2  # R18: 2 basic blocks per stage


def test_retinanet_train_step(retinanet):
    g = torch.Generator().manual_seed(1)
    retinanet.train()
    opt = torch.optim.SGD([p for p in retinanet.parameters() if p.requires_grad], lr=1e-3)
    before = retinanet.head.cls_score.weight.detach().clone()

    with EventStorage(0):  # RetinaNet logs training statistics to the current storage
        loss_dict = retinanet(batch(with_instances=True, generator=g))
    assert set(loss_dict) == {"loss_cls", "loss_box_reg"}
    for name, value in loss_dict.items():
        assert math.isfinite(value.item()), f"{name} = {value.item()}"
    opt.zero_grad()
    sum(loss_dict.values()).backward()
    assert retinanet.head.cls_score.weight.grad is not None
    assert retinanet.backbone.fpn_output5.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, retinanet.head.cls_score.weight)


def test_retinanet_inference(retinanet):
    g = torch.Generator().manual_seed(2)
    retinanet.eval()
    with torch.no_grad():
        outputs = retinanet(batch(with_instances=False, generator=g))
    assert len(outputs) == 3
    for out in outputs:
        inst = out["instances"]
        assert inst.image_size == (IMAGE_SIZE, IMAGE_SIZE)
        assert inst.pred_boxes.tensor.shape[1] == 4
        assert len(inst.scores) == len(inst.pred_classes) == len(inst)
        if len(inst):
            assert int(inst.pred_classes.max()) < NUM_CLASSES
            assert torch.isfinite(inst.pred_boxes.tensor).all()
