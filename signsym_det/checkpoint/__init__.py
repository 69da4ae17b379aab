"""Pretrained backbones: torchvision -> detectron2 names, conversion files, checked loading.

``torchvision_to_d2`` (pure renaming), ``pretrained`` (reading classification checkpoints,
writing detectron2 ones), ``io`` (atomic writes, weights-only reads), ``load_checks`` (what a
load did, from plain dicts) and ``load_report`` (its warnings/errors) need only torch;
``FeedbackCheckpointer`` (needs detectron2) is imported lazily.
"""

from .io import atomic_save, check_plain, load_weights_only
from .load_checks import LoadReport, check_load
from .load_report import CheckpointMismatchError, log_load_report
from .pretrained import canonical_rule, convert_pretrained, read_checkpoint, to_detectron2
from .torchvision_to_d2 import describe_resnet, torchvision_to_d2


def __getattr__(name):
    if name == "FeedbackCheckpointer":
        from .feedback_checkpointer import FeedbackCheckpointer

        return FeedbackCheckpointer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointMismatchError",
    "FeedbackCheckpointer",
    "LoadReport",
    "atomic_save",
    "canonical_rule",
    "check_load",
    "check_plain",
    "convert_pretrained",
    "describe_resnet",
    "load_weights_only",
    "log_load_report",
    "read_checkpoint",
    "to_detectron2",
    "torchvision_to_d2",
]
