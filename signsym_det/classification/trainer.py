"""The pretraining loop: rule-swapped ResNet on an ImageFolder, checkpointed and resumable.

One iteration = one global batch (``batch_size`` over all processes). A checkpoint holds the
number of finished iterations; resuming continues with the next one, on the same data order
(the sampler skips the finished batches of the epoch without reading them). Checkpoints are
tensors and plain values only (``torch.load(..., weights_only=True)``), written atomically:
``model``, ``optimizer``, ``scheduler``, ``scaler``, ``iteration``, ``epoch``, ``feedback``
(rule, scale, classifier rule, seed, Batch Manhattan flags), ``arch``, ``classes``, ``args``,
``metrics``, ``layout: "torchvision"``, ``__author__``. Being in torchvision's layout, they
reach a detectron2 model through FeedbackCheckpointer (which converts them in memory) or
tools/convert_pretrained.py; detectron2's own DetectionCheckpointer would match almost none
of their names (its warnings aside, silently).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint.io import atomic_save, load_weights_only
from ..feedback import gradient_alignment, weight_alignment
from .data import ShardedEpochSampler, build_loader, image_folder
from .distributed import barrier, init_distributed
from .metrics import evaluate, topk_correct
from .model import build_classifier, feedback_record
from .optim import build_optimizer
from .schedule import LRSchedule

CHECKPOINT = "checkpoint.pth"
FINAL = "model_final.pth"


def _plain_args(args) -> dict:
    plain = (str, int, float, bool, type(None))
    out = {}
    for key, value in vars(args).items():
        if isinstance(value, (list, tuple)):
            value = [v for v in value if isinstance(v, plain)]
        if isinstance(value, (*plain, list)):
            out[key] = value
    return out


class Pretrainer:
    """Builds everything from the parsed arguments (see signsym_det.classification.cli)."""

    def __init__(self, args):
        self.args = args
        self.device = args.device
        if args.amp and self.device != "cuda":
            raise ValueError("--amp needs a CUDA device (mixed precision on GPU only)")
        if args.sync_bn and self.device != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (torch's SyncBatchNorm is GPU-only)")
        self.dist = init_distributed(self.device)
        if args.batch_size % self.dist.world_size:
            raise ValueError(
                f"--batch-size {args.batch_size} is not divisible by {self.dist.world_size} "
                "processes"
            )
        torch.manual_seed(args.seed)
        self.train_set = image_folder(
            args.data, "train", True, args.image_size, args.min_crop_scale
        )
        self.val_set = image_folder(args.data, "val", False, args.image_size)
        if self.val_set.classes != self.train_set.classes:
            raise ValueError(f"{args.data}: train/ and val/ have different class folders")
        self.model = self._build_model().to(self.device)
        self.optimizer = build_optimizer(
            self.model,
            lr=args.lr,
            optimizer=args.optimizer,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            nesterov=args.nesterov,
            batch_manhattan=args.batch_manhattan,
            classifier_batch_manhattan=args.classifier_batch_manhattan,
            classifier_lr=args.classifier_lr,
        )
        self._build_loaders()
        self.schedule = LRSchedule(
            self.optimizer,
            total_iters=self.max_iter,
            schedule=args.schedule,
            milestones=[round(e * self.iters_per_epoch) for e in args.lr_steps],
            gamma=args.gamma,
            warmup_iters=round(args.warmup_epochs * self.iters_per_epoch),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
        self.net = self.model
        if self.dist.distributed:
            ids = [self.dist.local_rank] if self.device == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.iteration = 0
        self.metrics = {}
        self._validated_at = -1
        self.writer = None
        if self.dist.is_main:
            os.makedirs(args.output_dir, exist_ok=True)

    def _build_model(self):
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
        if args.sync_bn and self.dist.distributed:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _build_loaders(self):
        args, dist = self.args, self.dist
        per_process = args.batch_size // dist.world_size
        common = dict(rank=dist.rank, world_size=dist.world_size, seed=args.seed)
        self.train_sampler = ShardedEpochSampler(len(self.train_set), per_process, **common)
        self.iters_per_epoch = self.train_sampler.batches_per_epoch()
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
        self.train_loader = build_loader(self.train_set, self.train_sampler, args.workers, pin)
        self.val_loader = build_loader(self.val_set, val_sampler, args.workers, pin)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> dict:
        args = self.args
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if args.amp else {},
            "iteration": self.iteration,
            "epoch": self.iteration // self.iters_per_epoch,
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

    def save(self, name: str = CHECKPOINT) -> None:
        if self.dist.is_main:
            path = atomic_save(self.checkpoint(), os.path.join(self.args.output_dir, name))
            self.log(f"saved {path} (iteration {self.iteration})")
        barrier()

    def resume(self, path: str) -> None:
        """Restore model, optimizer, schedule, scaler and the iteration from ``path``."""
        state = load_weights_only(path)
        recorded = state.get("feedback", {}).get("rule")
        wanted = feedback_record(self.args.rule)["rule"]
        if recorded != wanted or state.get("arch") != self.args.arch:
            raise ValueError(
                f"{path} is a {state.get('arch')} trained with rule {recorded!r}; this run is "
                f"a {self.args.arch} with rule {wanted!r}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.args.amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if state.get("iters_per_epoch") not in (None, self.iters_per_epoch):
            self.log(
                f"WARNING: {path} had {state['iters_per_epoch']} iterations per epoch, this run "
                f"has {self.iters_per_epoch} (other batch size or data): epochs shift"
            )
        self.iteration = int(state["iteration"])
        self.metrics = dict(state.get("metrics", {}))
        self.log(f"resumed from {path} at iteration {self.iteration} / {self.max_iter}")

    # ------------------------------------------------------------------ logging

    def log(self, message: str) -> None:
        if self.dist.is_main:
            print(f"[pretrain] {message}", flush=True)

    def record(self, values: dict, step: int | None = None) -> None:
        """Scalars to TensorBoard and one line of metrics.jsonl (main process)."""
        if not self.dist.is_main:
            return
        step = self.iteration if step is None else step
        if self.writer is None and self.args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.args.output_dir)
        for key, value in values.items():
            if self.writer is not None and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
        with open(os.path.join(self.args.output_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"iteration": step, **values}, sort_keys=True) + "\n")

    def _due(self, period: int) -> bool:
        return period > 0 and self.iteration % period == 0

    def _alignment(self) -> None:
        angles = weight_alignment(self.model)
        if not angles:
            return
        mean = sum(angles.values()) / len(angles)
        self.record(
            {"weight_angle/mean": mean} | {f"weight_angle/{k}": v for k, v in angles.items()}
        )
        self.log(
            f"iter {self.iteration}: angle(B, W) mean {mean:.1f} deg over {len(angles)} layers"
        )

    def validate(self) -> dict:
        result = evaluate(self.net, self.val_loader, self.device, amp=self.args.amp)
        self.metrics = {
            "val_top1": result["top1"],
            "val_top5": result["top5"],
            "val_loss": result["loss"],
        }
        self._validated_at = self.iteration
        self.record(self.metrics)
        self.log(
            f"iter {self.iteration} (epoch {self.iteration / self.iters_per_epoch:.2f}): "
            f"val top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
            f"loss {result['loss']:.4f} on {result['count']} images"
        )
        return self.metrics

    # ------------------------------------------------------------------ training

    def _autocast(self):
        if not self.args.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def _step(self, images, target, meter: list) -> None:
        args = self.args
        self.schedule.apply(self.iteration)
        grad_due = args.gradient_alignment_period > 0 and (
            (self.iteration + 1) % args.gradient_alignment_period == 0
        )
        recorder = gradient_alignment(self.model, enabled=grad_due)
        with recorder as grad_angles:
            with self._autocast():
                logits = self.net(images)
                loss = F.cross_entropy(logits.float(), target)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at iteration {self.iteration}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        top1, top5 = topk_correct(logits.detach(), target)
        batch = [loss_value * len(target), top1, top5, len(target)]
        meter[:] = [a + b for a, b in zip(meter, batch)]
        if grad_angles:
            mean = sum(grad_angles.values()) / len(grad_angles)
            self.record(
                {"grad_angle/mean": mean} | {f"grad_angle/{k}": v for k, v in grad_angles.items()}
            )

    def _log_train(self, meter: list, started: float, start_iter: int) -> None:
        loss, top1, top5, count = meter[:4]
        count = max(count, 1)
        elapsed = time.perf_counter() - started
        per_iter = elapsed / max(1, self.iteration - start_iter)
        eta = per_iter * (self.max_iter - self.iteration)
        lr = self.optimizer.param_groups[0]["lr"]
        values = {
            "lr": lr,
            "loss": loss / count,
            "train_top1": 100 * top1 / count,
            "train_top5": 100 * top5 / count,
            "sec_per_iter": per_iter,
        }
        self.record(values)
        self.log(
            f"epoch {self.iteration // self.iters_per_epoch} iter {self.iteration}/"
            f"{self.max_iter}  lr {lr:.4g}  loss {values['loss']:.4f}  top-1 "
            f"{values['train_top1']:.1f}%  top-5 {values['train_top5']:.1f}%  "
            f"{per_iter:.3f} s/it  eta {eta / 60:.1f} min"
        )
        meter[:] = [0.0, 0.0, 0.0, 0]

    def train(self) -> dict:
        args = self.args
        self.net.train()
        self.log(
            f"{args.arch}, rule {args.rule} (classifier {args.classifier_rule}), "
            f"{len(self.train_set)} train / {len(self.val_set)} val images, "
            f"{len(self.train_set.classes)} classes, {self.iters_per_epoch} iterations per "
            f"epoch, {self.max_iter} in all, {self.dist.world_size} process(es) on {self.device}"
        )
        start_iter, started, meter = self.iteration, time.perf_counter(), [0.0, 0.0, 0.0, 0]
        while self.iteration < self.max_iter:
            epoch, batch = divmod(self.iteration, self.iters_per_epoch)
            self.train_sampler.set_epoch(epoch, batch)
            for images, target in self.train_loader:
                images = images.to(self.device, non_blocking=True)
                target = target.to(self.device, non_blocking=True)
                self._step(images, target, meter)
                if self._due(args.log_period) or self.iteration == self.max_iter:
                    self._log_train(meter, started, start_iter)
                if self._due(args.alignment_period):
                    self._alignment()
                end_of_epoch = self.iteration % self.iters_per_epoch == 0
                if (
                    end_of_epoch
                    and args.eval_period
                    and ((self.iteration // self.iters_per_epoch) % args.eval_period == 0)
                ):
                    self.validate()
                if self._due(args.checkpoint_period) or (
                    end_of_epoch and not args.checkpoint_period
                ):
                    self.save()
                if self.iteration >= self.max_iter:
                    break
        if self._validated_at != self.iteration:
            self.validate()
        self.save()
        self.save(FINAL)
        if self.writer is not None:
            self.writer.close()
        return self.metrics
