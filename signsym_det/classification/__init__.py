"""Classification pretraining of rule-swapped ResNets (tools/pretrain_net.py).

``model`` (torchvision ResNet + ``convert``), ``optim`` (SGD / Batch Manhattan),
``schedule`` (step / cosine lr), ``data`` (ImageFolder, resumable sharded sampler),
``metrics`` (top-k), ``distributed`` (torchrun), ``trainer`` (the loop), ``cli``.
"""

from .model import ARCHS, build_classifier, feedback_record  # noqa: F401
from .optim import BatchManhattanSGD, build_optimizer  # noqa: F401
from .schedule import LRSchedule  # noqa: F401
