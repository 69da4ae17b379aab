"""Unsupervised Hebbian pretraining of one layer on detectron2's engine: :class:`HebbianPretrainer`.

A sibling of :class:`.pretrain.Pretrainer` (which builds a supervised classifier): the same
TrainerBase, data order (:func:`.pretrain.epoch_batches` over a seeded ShardedEpochSampler),
checkpointer (:mod:`.latest_checkpoint`: WeightsOnlyCheckpointer + LatestCheckpointer)
and writers (``CommonMetricPrinter`` with ETA, ``JSONWriter``, ``TensorboardXWriter``), but
one iteration is ``learner.step(images)`` of a :class:`~signsym_det.hebbian.HebbianLearner`
on a batch of unlabelled images. One process (the rule sums over the batch; no all-reduce).

Per iteration it logs ``lr`` (the rule's eps), ``mean_abs_dw`` (mean |applied change of W|),
``mean_row_pnorm`` (mean over units of ||W_mu||_p, which the rule drives to 1) and
``units_won_frac`` (fraction of units that won at least one sample in the last ``window``
iterations; 1 - it = dead units; the window restarts on resume).

Checkpoints (weights-only): ``model`` (the layer's state dict), ``learner`` (step count,
settings, patch generator), ``iteration``, ``hebbian`` (the run's record, checked on resume),
``layout: "hebbian"``, ``__author__``. Resuming continues with the same weights, data order
and patch draws as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque

import torch
from detectron2.engine import TrainerBase, hooks
from detectron2.utils.events import (
    CommonMetricPrinter,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)
from torch import nn

from ..classification.data import ShardedEpochSampler, build_loader
from ..hebbian import HebbianLearner
from .latest_checkpoint import LatestCheckpointer, WeightsOnlyCheckpointer
from .pretrain import epoch_batches

logger = logging.getLogger(__name__)

METRICS = ("mean_abs_dw", "mean_row_pnorm", "units_won_frac")


class HebbianMetricPrinter(CommonMetricPrinter):
    """detectron2's printer (iteration, ETA, time, lr = eps) plus the latest Hebbian metrics."""

    def write(self):
        super().write()
        storage = get_event_storage()
        if storage.iter == self._max_iter:
            return
        latest = storage.latest()
        values = "  ".join(f"{k}: {latest[k][0]:.4g}" for k in METRICS if k in latest)
        self.logger.info(f" iter: {storage.iter}  {values}")


class HebbianPretrainer(TrainerBase):
    """Trains ``learner.layer`` on ``dataset`` (items: image tensors, no labels).

    ``record``: plain values describing the run (target, data, settings, seed); saved in
    every checkpoint under ``hebbian`` and required to be equal on resume.
    """

    def __init__(
        self,
        learner: HebbianLearner,
        dataset,
        *,
        output_dir: str,
        batch_size: int,
        seed: int,
        record: dict,
        workers: int = 0,
        log_period: int = 20,
        checkpoint_period: int = 0,
        window: int = 20,
        tensorboard: bool = True,
    ):
        super().__init__()
        self.learner, self.layer = learner, learner.layer
        self.output_dir, self.record = output_dir, dict(record)
        self.max_iter = learner.schedule.total_steps
        sampler = ShardedEpochSampler(len(dataset), batch_size, seed=seed)
        if sampler.batches_per_epoch() == 0:
            raise ValueError(f"{len(dataset)} images are fewer than one batch of {batch_size}")
        pin = self.layer.weight.device.type == "cuda"
        self.loader = build_loader(dataset, sampler, workers, pin)
        self.recent_wins = deque(maxlen=window)
        self.checkpointer = WeightsOnlyCheckpointer(
            self.layer,
            output_dir,
            extra_state=self.checkpoint_state,
            check=self._check_resumable,
            learner=learner,
        )
        os.makedirs(output_dir, exist_ok=True)
        writers = [
            HebbianMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(output_dir, "metrics.jsonl")),
        ]
        if tensorboard:
            writers.append(TensorboardXWriter(output_dir))
        self.register_hooks(
            [
                hooks.IterationTimer(),
                LatestCheckpointer(self.checkpointer, checkpoint_period or self.max_iter),
                hooks.PeriodicWriter(writers, period=log_period or self.max_iter),
            ]
        )

    def checkpoint_state(self) -> dict:
        return {
            "iteration": self.learner.steps_done,
            "hebbian": dict(self.record),
            "layout": "hebbian",
            "__author__": "signsym_det",
        }

    def _check_resumable(self, state: dict, path: str) -> None:
        if state.get("hebbian") != self.record:
            raise ValueError(
                f"{path} is another run: it records {state.get('hebbian')}, this run is "
                f"{self.record}"
            )

    def resume(self, path: str) -> None:
        """Restore the layer's weights and the learner (step count, patch generator)."""
        self.checkpointer.load(path)
        self.start_iter = self.learner.steps_done
        logger.info(f"resumed from {path} at iteration {self.start_iter} / {self.max_iter}")

    def run_step(self):
        start = time.perf_counter()
        images = next(self.data_iter)
        data_time = time.perf_counter() - start
        step = self.learner.step(images)
        weight = self.layer.weight.detach().flatten(1)
        self.recent_wins.append(torch.bincount(step.winners, minlength=len(weight)) > 0)
        won = torch.stack(tuple(self.recent_wins)).any(0)
        p = self.learner.p
        get_event_storage().put_scalars(
            data_time=data_time,
            lr=step.eps,
            mean_abs_dw=step.mean_abs_change.item(),
            mean_row_pnorm=weight.abs().pow(p).sum(1).pow(1 / p).mean().item(),
            units_won_frac=won.float().mean().item(),
            smoothing_hint=False,
        )

    def train(self) -> nn.Module:
        """Run from ``start_iter`` to the end of the learner's schedule; returns the layer."""
        logger.info(
            f"Hebbian pretraining of {self.layer} on {len(self.loader.dataset)} unlabelled "
            f"images, {self.max_iter} iterations: {self.record}"
        )
        self.data_iter = epoch_batches(self.loader, self.start_iter)
        super().train(self.start_iter, self.max_iter)
        return self.layer
