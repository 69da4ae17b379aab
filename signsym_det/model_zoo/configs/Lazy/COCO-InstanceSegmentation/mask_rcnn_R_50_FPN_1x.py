"""Mask R-CNN R50-FPN on COCO whose only change from stock detectron2 is a rule-swapped
backbone (ResNet body and FPN; default sign-symmetry, ``model.feedback.rule=...`` on the
command line): RPN and ROI heads stay plain layers trained by backprop."""

from signsym_det.lazy import apply_feedback, apply_techniques, detectron2_config

from ..common.data.coco import dataloader
from ..common.feedback import feedback
from ..common.input import torchvision_input
from ..common.train import train

model = detectron2_config("common/models/mask_rcnn_fpn.py", "model")
optimizer = detectron2_config("common/optim.py", "SGD")
# Batch Manhattan, weight-norm constraint, per-part clipping: all off (optimizer.techniques.*)
apply_techniques(optimizer)
lr_multiplier = detectron2_config("common/coco_schedule.py", "lr_multiplier_1x")

torchvision_input(model, dataloader)
model.backbone.bottom_up.freeze_at = 2
plain = dict(rule="none")
apply_feedback(
    model, **{**feedback, "parts": {**feedback["parts"], "head": plain, "predictor": plain}}
)
train.init_checkpoint = "pretrained/R-50_${model.feedback.rule}.pth"
