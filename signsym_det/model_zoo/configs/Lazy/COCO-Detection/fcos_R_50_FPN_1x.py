"""FCOS R50-FPN on COCO (in detectron2 v0.6 a LazyConfig-only model), every layer trained by
a learning rule (default sign-symmetry; ``model.feedback.rule=...`` on the command line),
from an ImageNet backbone pretrained with the same rule."""

from signsym_det.lazy import apply_feedback, detectron2_config, group_norm

from ..common.data.coco import dataloader
from ..common.feedback import feedback
from ..common.input import torchvision_input
from ..common.train import train

model = detectron2_config("common/models/fcos.py", "model")
optimizer = detectron2_config("common/optim.py", "SGD")
lr_multiplier = detectron2_config("common/coco_schedule.py", "lr_multiplier_1x")

torchvision_input(model, dataloader)
dataloader.train.mapper.use_instance_mask = False
model.backbone.bottom_up.freeze_at = 2
optimizer.lr = 0.01
model.head.norm = group_norm  # "GN", buildable on detectron2 v0.6 with today's torch
# the head's convs are followed by GroupNorm: He scale as in the backbone
apply_feedback(model, **{**feedback, "parts": {**feedback["parts"], "head": {}}})
train.init_checkpoint = "pretrained/R-50_${model.feedback.rule}.pth"
