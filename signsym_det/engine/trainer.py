"""``FeedbackTrainer``: detectron2's DefaultTrainer + COCO evaluation + alignment logging,
checked checkpoints and a complete training state on resume."""

import os

from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator

from ..checkpoint.feedback_checkpointer import FeedbackCheckpointer
from .alignment_hook import AlignmentHook, unwrap
from .distributed import cpu_aware_ddp
from .nonfinite import NonFiniteGradientError, describe, install_gradient_check
from .optim import build_optimizer

#: Float training state kept as plain model attributes (not in state_dict): RetinaNet's moving
#: average of the number of foreground anchors, which scales its losses (created at the first
#: forward, so a resumed run would restart it from its initial value).
MODEL_ATTRIBUTES = ("loss_normalizer",)


class ModelAttributes:
    """Checkpointable view of a model's :data:`MODEL_ATTRIBUTES`: the ones it has, as floats."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        return {
            a: float(getattr(self.model, a)) for a in MODEL_ATTRIBUTES if hasattr(self.model, a)
        }

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            if name in MODEL_ATTRIBUTES:
                setattr(self.model, name, value)


def holds_optimizer(trainer_state: dict) -> bool:
    """Whether a DefaultTrainer state carries the optimizer's (later detectron2 versions: under
    ``_trainer``; v0.6: not at all)."""
    return "optimizer" in trainer_state or "optimizer" in trainer_state.get("_trainer", {})


class FeedbackTrainer(DefaultTrainer):
    """DefaultTrainer that evaluates with COCOEvaluator, logs feedback alignment angles and
    loads/saves through :class:`FeedbackCheckpointer` (checked pretrained starts).

    Where the checkpointer is swapped: DefaultTrainer.__init__ (detectron2 v0.6 and later)
    creates ``self.checkpointer = DetectionCheckpointer(...)`` and only then calls
    ``build_hooks()``, whose PeriodicCheckpointer keeps that object. Replacing it at the top
    of ``build_hooks`` (same model, directory and checkpointables) is the last moment before
    any hook holds it, so ``resume_or_load`` (cfg.MODEL.WEIGHTS or resume), periodic saves
    and the final save all use the FeedbackCheckpointer.

    What a resumed run needs beyond detectron2 v0.6's checkpoint is checkpointed with it:
    the optimizer (SGD momentum) as ``"optimizer"`` unless the trainer's own state holds it,
    and :data:`MODEL_ATTRIBUTES` as ``"model_attributes"``.

    With several processes, DefaultTrainer.__init__ wraps the model by detectron2's
    ``create_ddp_model``; here by :func:`~signsym_det.engine.distributed.create_ddp_model`,
    which also takes CPU models (gloo workers without CUDA).
    """

    def __init__(self, cfg):
        with cpu_aware_ddp():
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
    def build_optimizer(cls, cfg, model):
        """detectron2's SGD plus the per-part techniques of ``cfg.MODEL.FEEDBACK``
        (Batch Manhattan, gradient clipping, weight-norm constraint: :mod:`.optim`)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    def build_hooks(self):
        if not isinstance(self.checkpointer, FeedbackCheckpointer):
            self.checkpointer = self._feedback_checkpointer(self.checkpointer)
        ret = super().build_hooks()
        fb = self.cfg.MODEL.FEEDBACK
        alignment = AlignmentHook(fb.ALIGNMENT_PERIOD, fb.GRADIENT_ALIGNMENT_PERIOD)
        # Before the writers, so that the angles of a step are written with it.
        writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
        ret.insert(writers[0] if writers else len(ret), alignment)
        return ret

    def _feedback_checkpointer(self, checkpointer):
        """A FeedbackCheckpointer with ``checkpointer``'s model, directory and objects, and
        the resume state detectron2's trainer state lacks."""
        extra = {"model_attributes": ModelAttributes(checkpointer.model)}
        if not holds_optimizer(self.state_dict()):
            extra["optimizer"] = self.optimizer
        return FeedbackCheckpointer(
            checkpointer.model,
            checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk,
            check_backbone=self.cfg.MODEL.FEEDBACK.CHECK_BACKBONE,
            **checkpointer.checkpointables,
            **extra,
        )
