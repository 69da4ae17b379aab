"""RetinaNet R50-FPN on COCO, every layer trained by a learning rule (default sign-symmetry;
``model.feedback.rule=fa`` etc. on the command line), from an ImageNet backbone pretrained
with the same rule (``pretrained/R-50_<rule>.pth``, as in Xiao et al. 2018)."""

from signsym_det.lazy import apply_feedback, apply_techniques, detectron2_config

from ..common.data.coco import dataloader
from ..common.feedback import feedback
from ..common.input import torchvision_input
from ..common.train import train

model = detectron2_config("common/models/retinanet.py", "model")
optimizer = detectron2_config("common/optim.py", "SGD")
# Batch Manhattan, weight-norm constraint, per-part clipping: all off (optimizer.techniques.*)
apply_techniques(optimizer)
lr_multiplier = detectron2_config("common/coco_schedule.py", "lr_multiplier_1x")

torchvision_input(model, dataloader)
dataloader.train.mapper.use_instance_mask = False
model.backbone.bottom_up.freeze_at = 2
optimizer.lr = 0.01
apply_feedback(model, **feedback)
train.init_checkpoint = "pretrained/R-50_${model.feedback.rule}.pth"
