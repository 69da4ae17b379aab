"""A Hebbian stem file in a detectron2 RetinaNet R18 (Shapes-Demo): loaded by the
FeedbackCheckpointer, checked, and kept frozen by MODEL.BACKBONE.FREEZE_AT 1."""

import logging

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from signsym_det import add_feedback_config
from signsym_det.checkpoint import CheckpointMismatchError, FeedbackCheckpointer
from signsym_det.engine.hebbian_stem import save_stem_checkpoint, stem_conv
from signsym_det.hebbian import Conv2dHebbianLearner
from signsym_det.model_zoo import get_config_file

STEM = "backbone.bottom_up.stem.conv1.weight"


def shapes_retinanet(*opts):
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_file(get_config_file("Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml"))
    cfg.merge_from_list(["MODEL.FPN.OUT_CHANNELS", 32, "MODEL.DEVICE", "cpu", *opts])
    return cfg, build_model(cfg)


@pytest.fixture(scope="module")
def stem_file(tmp_path_factory):
    conv = stem_conv()
    learner = Conv2dHebbianLearner(conv, 2, max_patches=200, generator=torch.Generator())
    for seed in range(2):
        learner.step(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    path = tmp_path_factory.mktemp("stem") / "stem_detectron2.pth"
    save_stem_checkpoint(learner, {"target": "stem"}, path)
    return path


def test_the_stem_loads_exactly_and_the_rest_is_reported_not_loaded(stem_file, caplog):
    _, model = shapes_retinanet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="signsym_det"):
        FeedbackCheckpointer(model, check_backbone=False).load(str(stem_file))
    file_stem = torch.load(stem_file, weights_only=True)["model"][STEM]
    after = model.state_dict()
    assert torch.equal(after[STEM], file_stem) and not torch.equal(before[STEM], file_stem)
    assert all(torch.equal(before[k], after[k]) for k in after if k != STEM)
    assert "rule recorded krotov_hopfield, model sign_symmetry" in caplog.text
    assert "backbone 1/" in caplog.text
    # the checkpointer's default check: a file with a stem only is not a whole backbone
    with pytest.raises(CheckpointMismatchError, match=r"1/\d+ backbone weights loaded"):
        FeedbackCheckpointer(shapes_retinanet()[1]).load(str(stem_file))


def test_freeze_at_1_keeps_the_loaded_stem_through_training(stem_file):
    cfg, model = shapes_retinanet("MODEL.BACKBONE.FREEZE_AT", 1)
    FeedbackCheckpointer(model, check_backbone=False).load(str(stem_file))
    stem = model.backbone.bottom_up.stem
    assert isinstance(stem.conv1.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in stem.parameters())
    loaded = torch.load(stem_file, weights_only=True)["model"][STEM]
    res2 = model.backbone.bottom_up.res2[0].conv1.weight.detach().clone()
    optimizer = build_optimizer(cfg, model)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        instances = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])))
        instances.gt_classes = torch.tensor([1])
        image = torch.randint(0, 256, (3, 64, 64), generator=generator, dtype=torch.uint8)
        with EventStorage(0):
            losses = model([{"image": image, "instances": instances}])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert torch.equal(model.state_dict()[STEM], loaded)
    assert not torch.equal(model.backbone.bottom_up.res2[0].conv1.weight, res2)
