"""RetinaNet R18-FPN trained FROM SCRATCH on the embedded shapes set on a CPU, every layer by a
learning rule: configs/Shapes-Demo/Base-Shapes-RetinaNet-R18.yaml as a LazyConfig. Default
sign-symmetry; another rule with ``model.feedback.rule=fa`` (bp, fa, sign_symmetry, frsf,
brsf, kolen_pollack) on the command line."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from signsym_det.lazy import apply_feedback, apply_techniques, detectron2_config

from ..common.data.shapes import dataloader
from ..common.feedback import feedback
from ..common.input import torchvision_input
from ..common.train import train

model = detectron2_config("common/models/retinanet.py", "model")
optimizer = detectron2_config("common/optim.py", "SGD")
# Batch Manhattan, weight-norm constraint, per-part clipping: all off (optimizer.techniques.*)
apply_techniques(optimizer)

torchvision_input(model, dataloader)
# R18 (basic blocks, no stride_in_1x1), learnable BatchNorm, nothing frozen
stages = model.backbone.bottom_up.stages
stages.depth = 18
stages.norm = model.backbone.bottom_up.stem.norm = "BN"
del stages.stride_in_1x1
model.backbone.bottom_up.freeze_at = 0
model.backbone.top_block.in_channels = 512
# FPN width 128, 2 convs per head subnet, anchors for 10-60 px objects, six classes
model.backbone.out_channels = 128
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128, 128]
model.anchor_generator.sizes = [
    [x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in (16, 32, 64, 128, 256)
]
model.num_classes = 6
# Small images on a CPU: fa/frsf's fixed B kept in buffers rather than redrawn every iteration.
apply_feedback(model, **feedback, fixed_feedback="store")

optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[2000, 2350, 2500]),
    warmup_length=100 / 2500,
    warmup_method="linear",
    warmup_factor=0.001,
)
train.max_iter = 2500
train.device = "cpu"
train.checkpointer.period = 500
train.eval_period = 0
train.output_dir = "output/lazy/shapes_${model.feedback.rule}"
