"""Unsupervised local Hebbian learning ("competing hidden units", Krotov & Hopfield 2019).

Plain torch (no detectron2 here). :mod:`.rule` has the update as a pure function and the
learning-rate schedule; :mod:`.learners` trains an ordinary nn.Linear / nn.Conv2d weight in
place, without labels::

    learner = Conv2dHebbianLearner(stem_conv, total_steps=1000, max_patches=4096,
                                   generator=torch.Generator().manual_seed(0))
    for images in batches:
        learner.step(images)
"""

from .learners import (
    PATCH_NORMS,
    Conv2dHebbianLearner,
    HebbianLearner,
    LinearHebbianLearner,
    StepRecord,
)
from .rule import LinearDecay, krotov_hopfield_delta, krotov_hopfield_update, normalised_step_

__all__ = [
    "PATCH_NORMS",
    "Conv2dHebbianLearner",
    "HebbianLearner",
    "LinearDecay",
    "LinearHebbianLearner",
    "StepRecord",
    "krotov_hopfield_delta",
    "krotov_hopfield_update",
    "normalised_step_",
]
