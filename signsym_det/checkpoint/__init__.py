"""Pretrained backbones: torchvision -> detectron2 names, conversion files, checked loading.

``torchvision_to_d2`` (pure renaming), ``pretrained`` (reading classification checkpoints,
writing detectron2 ones) and ``io`` need only torch; ``FeedbackCheckpointer`` (loading
semantics, needs detectron2) is imported lazily.
"""

from .io import atomic_save, check_plain, load_weights_only
from .pretrained import canonical_rule, convert_pretrained, to_detectron2
from .torchvision_to_d2 import describe_resnet, torchvision_to_d2

_LAZY = ("FeedbackCheckpointer", "CheckpointMismatchError", "LoadReport")


def __getattr__(name):
    if name in _LAZY:
        from . import feedback_checkpointer

        return getattr(feedback_checkpointer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "atomic_save",
    "canonical_rule",
    "check_plain",
    "convert_pretrained",
    "describe_resnet",
    "load_weights_only",
    "to_detectron2",
    "torchvision_to_d2",
    *_LAZY,
]
