"""Classification pretraining on detectron2's engine: :class:`Pretrainer`.

One iteration = one global batch (``batch_size`` over all processes). The step is
detectron2's ``SimpleTrainer`` (``AMPTrainer`` with ``--amp``) on :class:`ClassifierLoss`;
hooks do the rest: ``IterationTimer``, ``LRScheduler`` (an fvcore ParamScheduler, see
``classification.optim.lr_multiplier``), the detector's :class:`AlignmentHook` (parts: ResNet
stages), ``EvalHook`` (val top-1/top-5), :class:`LatestCheckpointer` and, on the main process,
``PeriodicWriter`` with ``CommonMetricPrinter``, ``JSONWriter`` (OUTPUT_DIR/metrics.jsonl)
and ``TensorboardXWriter``.

Checkpoints (tensors and plain values only, written atomically) hold ``model`` (torchvision
layout), ``optimizer``, ``scheduler``, ``scaler`` (AMP), ``iteration`` (finished ones),
``epoch``, ``iters_per_epoch``, ``feedback`` (rule, scale, classifier rule, seed, Batch
Manhattan flags), ``arch``, ``num_classes``, ``classes``, ``args``, ``metrics``,
``layout: "torchvision"``, ``__author__``. Resuming continues with the next iteration on the
same data order (the sampler skips the finished batches of the epoch without reading them);
the lr is recomputed from the iteration (so a longer ``--max-iter`` stretches the schedule).
FeedbackCheckpointer (converting in memory) or tools/convert_pretrained.py take them to a
detectron2 model.

Another learning algorithm (target propagation, Hebbian learning, ...) whose step is not
``loss.backward(); optimizer.step()``: subclass :class:`Pretrainer` and override
:meth:`run_step`, e.g.::

    class HebbianPretrainer(Pretrainer):
        def run_step(self):
            images, target = next(self.data_iter)  # this iteration's batch, on the device
            ...  # update self.model (and self.optimizer) as the algorithm says
            write_metrics({"loss_cls": loss}, data_time, self.iter)  # logged like ours

Data order and resume, the lr schedule, alignment, evaluation, checkpoints and logging are
hooks and stay as they are.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch
import torch.nn.functional as F
from detectron2.engine import AMPTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import (
    CommonMetricPrinter,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..classification.data import ShardedEpochSampler, build_loader, image_folder
from ..classification.metrics import evaluate, topk_correct
from ..classification.model import build_classifier, feedback_record, stage_of
from ..classification.optim import build_optimizer, lr_multiplier
from ..feedback.weight_norm import constrain_weight_norms
from .alignment_hook import AlignmentHook
from .latest_checkpoint import LatestCheckpointer, WeightsOnlyCheckpointer

logger = logging.getLogger(__name__)


def _plain_args(args) -> dict:
    plain = (str, int, float, bool, type(None))
    out = {}
    for key, value in vars(args).items():
        if isinstance(value, (list, tuple)):
            value = [v for v in value if isinstance(v, plain)]
        if isinstance(value, (*plain, list)):
            out[key] = value
    return out


def epoch_batches(loader, start_iter: int):
    """Training batches from iteration ``start_iter`` on, epoch after epoch: iteration t is
    batch t % n of epoch t // n (n batches per epoch; the sampler draws epoch e's order)."""
    sampler = loader.sampler
    epoch, batch = divmod(start_iter, sampler.batches_per_epoch())
    while True:
        sampler.set_epoch(epoch, batch)
        yield from loader
        epoch, batch = epoch + 1, 0


def write_metrics(loss_dict: dict, data_time: float, iteration: int) -> None:
    """detectron2's ``SimpleTrainer.write_metrics`` (losses and data time to the storage, like
    every step of ours), on v0.6 ``(loss_dict, data_time)`` and on main ``(..., cur_iter)``."""
    if "cur_iter" in inspect.signature(SimpleTrainer.write_metrics).parameters:
        SimpleTrainer.write_metrics(loss_dict, data_time, iteration)
    else:
        SimpleTrainer.write_metrics(loss_dict, data_time)


class ClassifierLoss(nn.Module):
    """``(images, target)`` -> ``{"loss_cls": cross-entropy}`` of ``model``; the batch's
    top-1/top-5 (percent) go to the EventStorage."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        images, target = batch
        logits = self.model(images)
        top1, top5 = topk_correct(logits.detach(), target)
        get_event_storage().put_scalars(
            train_top1=100 * top1 / len(target), train_top5=100 * top5 / len(target)
        )
        return {"loss_cls": F.cross_entropy(logits.float(), target)}


class Pretrainer(TrainerBase):
    """Everything built from the parsed arguments (see signsym_det.pretrain_net)."""

    def __init__(self, args):
        super().__init__()
        self.args = args
        self.device = args.device
        if args.amp and self.device != "cuda":
            raise ValueError("--amp needs a CUDA device (mixed precision on GPU only)")
        if args.sync_bn and self.device != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (torch's SyncBatchNorm is GPU-only)")
        if args.batch_size % comm.get_world_size():
            raise ValueError(
                f"--batch-size {args.batch_size} is not divisible by {comm.get_world_size()} "
                "processes"
            )
        torch.manual_seed(args.seed)
        self.train_set = image_folder(
            args.data, "train", True, args.image_size, args.min_crop_scale
        )
        self.val_set = image_folder(args.data, "val", False, args.image_size)
        if self.val_set.classes != self.train_set.classes:
            raise ValueError(f"{args.data}: train/ and val/ have different class folders")
        classifier = self.build_model().to(self.device)
        self.optimizer = build_optimizer(
            classifier,
            lr=args.lr,
            optimizer=args.optimizer,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            nesterov=args.nesterov,
            batch_manhattan=args.batch_manhattan,
            classifier_batch_manhattan=args.classifier_batch_manhattan,
            classifier_lr=args.classifier_lr,
        )
        if args.weight_norm_constraint:
            constrain_weight_norms(classifier, self.optimizer)
        self._build_loaders()
        self.grad_scaler = torch.amp.GradScaler("cuda") if args.amp else None
        self.model = classifier
        if comm.get_world_size() > 1:
            ids = [torch.cuda.current_device()] if self.device == "cuda" else None
            self.model = DistributedDataParallel(classifier, device_ids=ids)
        self.iterations_done = 0
        self.metrics = {}
        self.lr_schedule = hooks.LRScheduler(
            self.optimizer,
            lr_multiplier(
                args.schedule,
                total_iters=self.max_iter,
                milestones=[round(e * self.iters_per_epoch) for e in args.lr_steps],
                gamma=args.gamma,
                warmup_iters=round(args.warmup_epochs * self.iters_per_epoch),
            ),
        )
        scaler = {"scaler": self.grad_scaler} if args.amp else {}
        self.checkpointer = WeightsOnlyCheckpointer(
            classifier,
            args.output_dir,
            save_to_disk=comm.is_main_process(),
            extra_state=self.checkpoint_state,
            check=self._check_resumable,
            optimizer=self.optimizer,
            scheduler=self.lr_schedule,  # saved for the record; resuming recomputes the lr
            **scaler,
        )
        self.register_hooks(self.build_hooks())

    def build_model(self):
        args = self.args
        model = build_classifier(
            args.arch,
            len(self.train_set.classes),
            args.rule,
            scale=args.scale,
            classifier_rule=args.classifier_rule,
            classifier_scale=args.classifier_scale,
            seed=args.seed,
        )
        if args.sync_bn and comm.get_world_size() > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _build_loaders(self):
        args, world_size = self.args, comm.get_world_size()
        per_process = args.batch_size // world_size
        common = dict(rank=comm.get_rank(), world_size=world_size, seed=args.seed)
        train_sampler = ShardedEpochSampler(len(self.train_set), per_process, **common)
        self.iters_per_epoch = train_sampler.batches_per_epoch()
        if self.iters_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_set)} training images are fewer than one batch of "
                f"{args.batch_size}"
            )
        self.max_iter = args.max_iter or args.epochs * self.iters_per_epoch
        val_sampler = ShardedEpochSampler(
            len(self.val_set), per_process, shuffle=False, drop_last=False, **common
        )
        pin = self.device == "cuda"
        self.train_loader = build_loader(self.train_set, train_sampler, args.workers, pin)
        self.val_loader = build_loader(self.val_set, val_sampler, args.workers, pin)

    def build_hooks(self) -> list:
        args, ipe = self.args, self.iters_per_epoch
        ret = [
            hooks.IterationTimer(),
            self.lr_schedule,
            AlignmentHook(args.alignment_period, args.gradient_alignment_period, stage_of),
            hooks.EvalHook(args.eval_period * ipe, self.validate),
            LatestCheckpointer(self.checkpointer, args.checkpoint_period or ipe),
        ]
        if comm.is_main_process():
            os.makedirs(args.output_dir, exist_ok=True)
            writers = [
                CommonMetricPrinter(self.max_iter),
                JSONWriter(os.path.join(args.output_dir, "metrics.jsonl")),
            ]
            if args.tensorboard:
                writers.append(TensorboardXWriter(args.output_dir))
            ret.append(hooks.PeriodicWriter(writers, period=args.log_period or self.max_iter))
        return ret

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self) -> dict:
        """The values a checkpoint holds besides model, optimizer, scheduler and scaler."""
        args = self.args
        return {
            "iteration": self.iterations_done,
            "epoch": self.iterations_done // self.iters_per_epoch,
            "iters_per_epoch": self.iters_per_epoch,
            "arch": args.arch,
            "num_classes": len(self.train_set.classes),
            "classes": list(self.train_set.classes),
            "feedback": feedback_record(
                args.rule,
                args.scale,
                classifier_rule=args.classifier_rule,
                classifier_scale=args.classifier_scale,
                seed=args.seed,
                batch_manhattan=args.batch_manhattan,
                classifier_batch_manhattan=args.classifier_batch_manhattan,
            ),
            "args": _plain_args(args),
            "metrics": dict(self.metrics),
            "layout": "torchvision",
            "__author__": "signsym_det",
        }

    def _check_resumable(self, state: dict, path: str) -> None:
        recorded = state.get("feedback", {}).get("rule")
        wanted = feedback_record(self.args.rule)["rule"]
        if recorded != wanted or state.get("arch") != self.args.arch:
            raise ValueError(
                f"{path} is a {state.get('arch')} trained with rule {recorded!r}; this run is "
                f"a {self.args.arch} with rule {wanted!r}"
            )

    def resume(self, path: str) -> None:
        """Restore model, optimizer, scaler and the iteration from ``path``."""
        state = self.checkpointer.load(path)
        if state.get("iters_per_epoch") not in (None, self.iters_per_epoch):
            logger.warning(
                f"{path} had {state['iters_per_epoch']} iterations per epoch, this run "
                f"has {self.iters_per_epoch} (other batch size or data): epochs shift"
            )
        self.iterations_done = self.start_iter = int(state["iteration"])
        self.metrics = dict(state.get("metrics", {}))
        logger.info(f"resumed from {path} at iteration {self.start_iter} / {self.max_iter}")

    # ------------------------------------------------------------------ training

    def validate(self) -> dict:
        """Top-1/top-5 and loss on val (all processes), kept for the next checkpoint."""
        result = evaluate(self.model, self.val_loader, self.device, amp=self.args.amp)
        self.metrics = {
            "val_top1": result["top1"],
            "val_top5": result["top5"],
            "val_loss": result["loss"],
        }
        done = self.iterations_done
        logger.info(
            f"iter {done} (epoch {done / self.iters_per_epoch:.2f}): "
            f"val top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
            f"loss {result['loss']:.4f} on {result['count']} images"
        )
        return self.metrics

    def _on_device(self, batches):
        for images, target in batches:
            yield (
                images.to(self.device, non_blocking=True),
                target.to(self.device, non_blocking=True),
            )

    def run_step(self):
        self._step.iter = self.iter
        self._step.run_step()

    def after_step(self):
        self.iterations_done = self.iter + 1
        super().after_step()

    def train(self) -> dict:
        args = self.args
        logger.info(
            f"{args.arch}, rule {args.rule} (classifier {args.classifier_rule}), "
            f"{len(self.train_set)} train / {len(self.val_set)} val images, "
            f"{len(self.train_set.classes)} classes, {self.iters_per_epoch} iterations per "
            f"epoch, {self.max_iter} in all, {comm.get_world_size()} process(es) on "
            f"{self.device}"
        )
        self.data_iter = self._on_device(epoch_batches(self.train_loader, self.start_iter))
        loss = ClassifierLoss(self.model)
        if self.grad_scaler is None:
            self._step = SimpleTrainer(loss, self.data_iter, self.optimizer)
        else:
            self._step = AMPTrainer(loss, self.data_iter, self.optimizer, self.grad_scaler)
        super().train(self.start_iter, self.max_iter)
        return self.metrics
