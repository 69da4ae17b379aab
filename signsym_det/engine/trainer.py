"""``FeedbackTrainer``: detectron2's DefaultTrainer + COCO evaluation + alignment logging."""

import os

from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator

from .alignment_hook import AlignmentHook


class FeedbackTrainer(DefaultTrainer):
    """DefaultTrainer that evaluates with COCOEvaluator and logs feedback alignment angles."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    def build_hooks(self):
        ret = super().build_hooks()
        fb = self.cfg.MODEL.FEEDBACK
        alignment = AlignmentHook(fb.ALIGNMENT_PERIOD, fb.GRADIENT_ALIGNMENT_PERIOD)
        # Before the writers, so that the angles of a step are written with it.
        writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
        ret.insert(writers[0] if writers else len(ret), alignment)
        return ret
