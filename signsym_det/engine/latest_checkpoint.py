"""One rolling checkpoint file per run, written atomically and read weights-only.

``OUTPUT_DIR/checkpoint.pth`` is the latest state (every ``period`` iterations and at the
end), ``OUTPUT_DIR/model_final.pth`` the end state; both hold only tensors and plain values
(``torch.load(..., weights_only=True)``). :class:`WeightsOnlyCheckpointer` is fvcore's
Checkpointer with such files; :class:`LatestCheckpointer` is detectron2's
PeriodicCheckpointer hook writing these two names instead of ``model_{iter:07d}.pth``.
"""

from __future__ import annotations

import os

from detectron2.engine import hooks
from fvcore.common.checkpoint import Checkpointer

from ..checkpoint import load_weights_only
from ..checkpoint.io import AtomicLocalWrites

LATEST = "checkpoint"
FINAL = "model_final"


def latest_checkpoint_path(output_dir) -> str:
    """Where a run in ``output_dir`` keeps its latest checkpoint."""
    return os.path.join(output_dir, f"{LATEST}.pth")


def add_resume_argument(parser) -> None:
    """``--resume [PATH]`` of the pretraining tools (no value: the run's latest checkpoint)."""
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help=f"resume from PATH, or (no value) from {latest_checkpoint_path('OUTPUT_DIR')}",
    )


def resume_path(args, *, starting: bool = True):
    """The checkpoint to resume from (None: start anew). ``starting`` (a run that will write
    checkpoints): refuse to start anew over an existing run without ``--resume``."""
    latest = latest_checkpoint_path(args.output_dir)
    if args.resume == "auto":
        return latest if os.path.isfile(latest) else None
    if args.resume is None and starting and os.path.isfile(latest):
        raise SystemExit(
            f"{latest} exists: pass --resume to continue that run, or choose another --output-dir"
        )
    return args.resume


class WeightsOnlyCheckpointer(Checkpointer):
    """fvcore's Checkpointer, but: files are written atomically and must read weights-only
    (:class:`AtomicLocalWrites`), no ``last_checkpoint`` tag (the names are fixed), the
    model is loaded strictly (a resume restores every tensor), ``extra_state()`` adds
    top-level values to every save and ``check(checkpoint, path)`` may refuse a file before
    anything of it is loaded."""

    def __init__(self, model, save_dir="", *, extra_state=dict, check=None, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = AtomicLocalWrites(self.path_manager)
        self._extra_state = extra_state
        self._check = check

    def save(self, name, **kwargs):
        super().save(name, **{**self._extra_state(), **kwargs})

    def tag_last_checkpoint(self, last_filename_basename):
        """No tag: :func:`latest_checkpoint_path` names the latest file."""

    def _load_file(self, path):
        checkpoint = load_weights_only(path)
        if self._check is not None:
            self._check(checkpoint, path)
        return checkpoint

    def _load_model(self, checkpoint):
        self.model.load_state_dict(checkpoint.pop("model"))


class LatestCheckpointer(hooks.PeriodicCheckpointer):
    """Saves ``LATEST`` every ``period`` iterations; after training (so after the hooks
    registered before it, e.g. the final evaluation) ``LATEST`` and ``FINAL``."""

    def step(self, iteration, **kwargs):
        done = iteration + 1
        if done % self.period == 0 and done < self.max_iter:
            self.checkpointer.save(LATEST, **kwargs)

    def after_train(self):
        if self.trainer.iter >= self.max_iter:  # finished, not failed
            self.checkpointer.save(LATEST)
            self.checkpointer.save(FINAL)
