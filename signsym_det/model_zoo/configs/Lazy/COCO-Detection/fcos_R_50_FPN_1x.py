"""FCOS R50-FPN on COCO (in detectron2 v0.6 a LazyConfig-only model), every layer trained by
a learning rule (default sign-symmetry; ``model.feedback.rule=...`` on the command line),
from an ImageNet backbone pretrained with the same rule; data, schedule and training as the
RetinaNet config's."""

from signsym_det.lazy import apply_feedback, detectron2_config, group_norm

from ..common.feedback import feedback
from ..common.input import torchvision_input
from .retinanet_R_50_FPN_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401

model = detectron2_config("common/models/fcos.py", "model")
torchvision_input(model, dataloader)
model.backbone.bottom_up.freeze_at = 2
model.head.norm = group_norm  # "GN", buildable on detectron2 v0.6 with today's torch
# the head's convs are followed by GroupNorm: He scale as in the backbone
apply_feedback(model, **{**feedback, "parts": {**feedback["parts"], "head": {}}})
