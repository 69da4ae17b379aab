"""What is specific to classifiers in pretraining (tools/pretrain_net.py).

``model`` (torchvision ResNet + ``convert``), ``optim`` (SGD / Batch Manhattan, lr schedule),
``data`` (ImageFolder, resumable sharded sampler), ``metrics`` (top-k), ``distributed``
(torchrun), ``cli``. The loop is detectron2's engine: ``signsym_det.engine.pretrain``.
"""

from .model import ARCHS, build_classifier, feedback_record  # noqa: F401
from .optim import BatchManhattanSGD, build_optimizer, lr_multiplier  # noqa: F401
