"""``FeedbackTrainer``: detectron2's DefaultTrainer + COCO evaluation + alignment logging."""

import os

from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator

from ..checkpoint.feedback_checkpointer import FeedbackCheckpointer
from .alignment_hook import AlignmentHook, unwrap
from .nonfinite import NonFiniteGradientError, describe, install_gradient_check


class FeedbackTrainer(DefaultTrainer):
    """DefaultTrainer that evaluates with COCOEvaluator, logs feedback alignment angles and
    loads/saves through :class:`FeedbackCheckpointer` (checked pretrained starts).

    Where the checkpointer is swapped: DefaultTrainer.__init__ (detectron2 v0.6 and later)
    creates ``self.checkpointer = DetectionCheckpointer(...)`` and only then calls
    ``build_hooks()``, whose PeriodicCheckpointer keeps that object. Replacing it at the top
    of ``build_hooks`` (same model, directory and checkpointables) is the last moment before
    any hook holds it, so ``resume_or_load`` (cfg.MODEL.WEIGHTS or resume), periodic saves
    and the final save all use the FeedbackCheckpointer.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.MODEL.FEEDBACK.CHECK_FINITE_GRADIENTS:
            install_gradient_check(self.optimizer, unwrap(self.model), lambda: self.iter)

    def run_step(self):
        """detectron2's step; a non-finite loss also names where the gradients blew up."""
        try:
            super().run_step()
        except NonFiniteGradientError:
            raise
        except FloatingPointError as error:
            where = describe(unwrap(self.model), self.iter)
            raise FloatingPointError(
                f"{error}\n{where}. For the exact first layer rerun with "
                "MODEL.FEEDBACK.CHECK_FINITE_GRADIENTS True; for fa, gradient clipping "
                "(SOLVER.CLIP_GRADIENTS.ENABLED True) often helps."
            ) from error

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    def build_hooks(self):
        if not isinstance(self.checkpointer, FeedbackCheckpointer):
            self.checkpointer = FeedbackCheckpointer.replacing(self.checkpointer)
        ret = super().build_hooks()
        fb = self.cfg.MODEL.FEEDBACK
        alignment = AlignmentHook(fb.ALIGNMENT_PERIOD, fb.GRADIENT_ALIGNMENT_PERIOD)
        # Before the writers, so that the angles of a step are written with it.
        writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
        ret.insert(writers[0] if writers else len(ret), alignment)
        return ret
