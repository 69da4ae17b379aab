"""One train step + inference of rule-swapped detectors on random images (CPU)."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from signsym_det.feedback import FeedbackLayer

from .test_configs import load_cfg

SMALL = [
    "MODEL.RESNETS.DEPTH",
    18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    64,
    "MODEL.FPN.OUT_CHANNELS",
    32,
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.BACKBONE.FREEZE_AT",
    0,
    "MODEL.WEIGHTS",
    "",
]


def images(with_empty=True, size=64, num_classes=3):
    torch.manual_seed(0)
    batch = []
    for i in range(3):
        inst = Instances((size, size))
        n = 0 if (with_empty and i == 2) else 2
        xy = torch.rand(n, 2) * size * 0.5
        inst.gt_boxes = Boxes(torch.cat([xy, xy + 8 + torch.rand(n, 2) * size * 0.4], dim=1))
        inst.gt_classes = torch.randint(0, num_classes, (n,))
        batch.append({"image": torch.rand(3, size, size) * 255, "instances": inst})
    return batch


def train_step_and_infer(cfg):
    model = build_model(cfg)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with EventStorage():
        losses = model(images())
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("backbone.") for n in moved)
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 64, 64) * 255, "height": 64, "width": 64}])
    assert outputs[0]["instances"].pred_boxes.tensor.shape[1] == 4
    return model


@pytest.mark.parametrize("rule", ["bp", "sign_symmetry"])
def test_retinanet_train_step(rule):
    cfg = load_cfg(
        f"configs/COCO-Detection/retinanet_R_18_FPN_1x_{rule}.yaml",
        *SMALL,
        "MODEL.RETINANET.NUM_CLASSES",
        3,
    )
    model = train_step_and_infer(cfg)
    rules = {m.rule for m in model.modules() if isinstance(m, FeedbackLayer)}
    assert rules == {rule}
    assert isinstance(model.head.cls_score, FeedbackLayer)


def test_faster_rcnn_with_feedback_backbone_train_step():
    cfg = load_cfg(
        "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x_sign_symmetry_backbone.yaml",
        *SMALL,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        3,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        32,
    )
    model = train_step_and_infer(cfg)
    assert isinstance(model.backbone.bottom_up.stem.conv1, FeedbackLayer)
    assert isinstance(model.backbone.fpn_lateral2, FeedbackLayer)
    assert not isinstance(model.roi_heads.box_predictor.cls_score, FeedbackLayer)
    assert not isinstance(model.proposal_generator.rpn_head.conv, FeedbackLayer)


def test_faster_rcnn_feedback_detector_bp_predictor():
    cfg = load_cfg(
        "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x_sign_symmetry.yaml",
        *SMALL,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        3,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        32,
    )
    model = train_step_and_infer(cfg)
    assert model.roi_heads.box_predictor.cls_score.rule == "bp"
    assert model.proposal_generator.rpn_head.objectness_logits.rule == "bp"
    assert model.roi_heads.box_head.fc1.rule == "sign_symmetry"
    assert model.proposal_generator.rpn_head.conv.rule == "sign_symmetry"
