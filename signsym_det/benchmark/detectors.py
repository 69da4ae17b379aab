"""RetinaNet variants for the benchmark: stock detectron2 and one per learning rule.

Every variant is built from the same seed, so all start from identical weights (checked):
inference then does exactly the same work in all of them, and a training step differs only by
what the rule changes in the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..config import add_feedback_config, validate_feedback_config
from ..feedback import available_rules
from ..model_zoo import get_config_file

#: The stock detectron2 model: plain nn.Conv2d and plain autograd, the baseline of all ratios.
STOCK = "stock"
RULES = tuple(available_rules())


def config_path(depth: int, rule: str) -> str:
    """The packaged config of RetinaNet R{depth}-FPN trained with ``rule`` (bp's for stock)."""
    name = f"retinanet_R_{depth}_FPN_1x_{'bp' if rule == STOCK else rule}.yaml"
    return get_config_file(f"COCO-Detection/{name}")


def load_config(depth: int, variant: str, device: str, opts=()):
    """The variant's config: the shipped YAML, no weights file, ``device``, then ``opts``.

    The stock variant is the same config with detectron2's own ``RetinaNet`` meta-arch.
    """
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_file(config_path(depth, variant))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", *opts])
    if variant == STOCK:
        cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    return validate_feedback_config(cfg)


def build_variant(cfg, seed: int = 0):
    """(model in train mode, detectron2's optimizer for it), weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    return model, build_optimizer(cfg, model)


def build_scheduler(cfg, optimizer):
    """detectron2's LR schedule for ``optimizer`` (linear warm-up from 0.001 x BASE_LR)."""
    return build_lr_scheduler(cfg, optimizer)


def synthetic_batch(
    batch: int, size: int, num_classes: int, boxes: int = 3, seed: int = 0, device="cpu"
) -> list[dict]:
    """``batch`` random ``size`` x ``size`` images, each with ``boxes`` random gt boxes."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(batch):
        corner = torch.rand(boxes, 2, generator=generator) * size * 0.6
        extent = 16 + torch.rand(boxes, 2, generator=generator) * size * 0.35
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.cat([corner, corner + extent], dim=1).to(device))
        instances.gt_classes = torch.randint(num_classes, (boxes,), generator=generator).to(device)
        image = (torch.rand(3, size, size, generator=generator) * 255).to(device)
        images.append({"image": image, "instances": instances, "height": size, "width": size})
    return images


def same_weights(reference: torch.nn.Module, other: torch.nn.Module) -> bool:
    """True iff every parameter/buffer of ``reference`` has an equal one in ``other``."""
    mine = reference.state_dict()
    theirs = other.state_dict()
    return all(name in theirs and torch.equal(mine[name], theirs[name]) for name in mine)


@dataclass
class TrainStep:
    """One detectron2 SimpleTrainer iteration: forward, sum losses, zero_grad, backward, step.

    ``scheduler`` (or None) is stepped after the optimizer, as detectron2's LRScheduler hook
    does: the benchmark's iterations are the first of a training run, in LR warm-up, where
    the rules also stay finite from a random start. ``autocast`` (a dtype or None) runs the
    forward under ``torch.autocast``; ``scaler`` (a ``torch.amp.GradScaler`` or None) scales
    the loss, as AMPTrainer does on CUDA.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch: list
    autocast: torch.dtype | None = None
    scaler: object = None
    scheduler: object = None
    losses: list = field(default_factory=list)

    def __call__(self) -> None:
        device_type = self.batch[0]["image"].device.type
        with (
            EventStorage(),
            torch.autocast(device_type, dtype=self.autocast, enabled=self.autocast is not None),
        ):
            loss_dict = self.model(self.batch)
        loss = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.losses.append(loss.detach())


def inference_step(
    model: torch.nn.Module, batch: list, autocast: torch.dtype | None = None
) -> Callable[[], list]:
    """A callable running ``model`` in eval mode under no_grad on ``batch`` (images only)."""
    images = [{k: v for k, v in item.items() if k != "instances"} for item in batch]
    device_type = images[0]["image"].device.type

    def run():
        was_training = model.training
        model.eval()
        try:
            with (
                torch.no_grad(),
                torch.autocast(device_type, dtype=autocast, enabled=autocast is not None),
            ):
                return model(images)
        finally:
            model.train(was_training)

    return run
