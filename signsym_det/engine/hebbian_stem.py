"""A Hebbian stem as a detectron2 checkpoint: ``cfg.MODEL.WEIGHTS`` loads it into a ResNet.

The file holds one tensor under detectron2's full name (``backbone.bottom_up.stem.conv1.weight``
of every ResNet/ResNet-FPN backbone built here), so no name heuristics are involved, plus
``"feedback": {"rule": RULE, ...}`` (the rule and its settings: the checkpointer's load report
names it) and ``"hebbian"`` (the run's record). Weights-only. The stem's norm and the rest of the
backbone are not in it: load it with ``FeedbackCheckpointer(..., check_backbone=False)``
(which reports the rest as not loaded, as a WARNING instead of a backbone-mismatch ERROR).
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from ..checkpoint import atomic_save
from ..checkpoint.load_checks import STEM_KEY
from ..checkpoint.pretrained import AUTHOR
from ..hebbian import HebbianLearner

BACKBONE_PREFIX = "backbone.bottom_up."
STEM_WEIGHT = BACKBONE_PREFIX + STEM_KEY
RULE = "krotov_hopfield"
#: detectron2's ResNet stem: 7x7 conv, stride 2, padding 3, no bias (its norm follows).
STEM_SHAPE = dict(kernel_size=7, stride=2, padding=3, bias=False)


def stem_conv(out_channels: int = 64) -> nn.Conv2d:
    """A plain conv shaped like detectron2's BasicStem.conv1 on RGB input."""
    return nn.Conv2d(3, out_channels, **STEM_SHAPE)


def stem_checkpoint(weight: Tensor, feedback: dict, record: dict) -> dict:
    """The detectron2 checkpoint of a (64, 3, 7, 7) stem ``weight``; ``feedback``: how it was
    made (``{"rule": ..., settings}``), ``record``: the run's record."""
    return {
        "model": {STEM_WEIGHT: weight.detach().cpu().clone()},
        "feedback": dict(feedback),
        "hebbian": dict(record),
        "layout": "detectron2",
        "matching_heuristics": False,
        "__author__": AUTHOR,
    }


def save_stem_weight(weight: Tensor, feedback: dict, record: dict, path) -> str:
    """Write :func:`stem_checkpoint` atomically to ``path``."""
    return atomic_save(stem_checkpoint(weight, feedback, record), path)


def save_stem_checkpoint(learner: HebbianLearner, record: dict, path: str | os.PathLike) -> str:
    """Write the stem ``learner`` trained (rule :data:`RULE` and its settings) to ``path``."""
    feedback = {"rule": RULE, **learner.settings()}
    return save_stem_weight(learner.layer.weight, feedback, record, path)
