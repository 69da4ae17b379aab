"""RetinaNet variants for the benchmark: stock detectron2 and one per learning rule.

Every variant is built from the same seed, so all start from identical weights (checked):
inference then does exactly the same work in all of them, and a training step differs only by
what the rule changes in the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..config import add_feedback_config, validate_feedback_config
from ..feedback import DEFAULT_FIXED_FEEDBACK, available_rules
from ..model_zoo import get_config_file

#: The stock detectron2 model: plain nn.Conv2d and plain autograd, the baseline of all ratios.
STOCK = "stock"
RULES = tuple(available_rules())


@dataclass(frozen=True)
class Setting:
    """A detector setting: the packaged configs ``template.format(rule=...)`` (bp's for stock),
    ``batch`` images of ``size`` x ``size`` per iteration (None: the run's --batch / --size)."""

    name: str
    depth: int
    template: str
    batch: Optional[int] = None
    size: Optional[int] = None

    def config_path(self, rule: str) -> str:
        return get_config_file(self.template.format(rule="bp" if rule == STOCK else rule))


_COCO = "COCO-Detection/retinanet_R_{depth}_FPN_1x_{{rule}}.yaml"
#: The settings of the benchmark: COCO R18 / R50 at the run's size, COCO R18 on 2 x 192^2
#: (small images, where a per-iteration cost shows most) and the shapes demo's R18 (8 x 128^2,
#: FPN 128, learnable BN, nothing frozen).
SETTINGS = {
    "R18": Setting("R18", 18, _COCO.format(depth=18)),
    "R50": Setting("R50", 50, _COCO.format(depth=50)),
    "R18-small": Setting("R18-small", 18, _COCO.format(depth=18), batch=2, size=192),
    "demo": Setting("demo", 18, "Shapes-Demo/retinanet_R_18_FPN_{rule}.yaml", batch=8, size=128),
}


def load_config(setting: Setting, variant: str, device: str, opts=()):
    """The variant's config: the shipped YAML, no weights file, ``device``, the library's
    default ``FIXED_FEEDBACK`` (what a user gets), then ``opts``.

    The stock variant is the same config with detectron2's own ``RetinaNet`` meta-arch.
    """
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_file(setting.config_path(variant))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""])
    cfg.merge_from_list(["MODEL.FEEDBACK.FIXED_FEEDBACK", DEFAULT_FIXED_FEEDBACK, *opts])
    if variant == STOCK:
        cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    return validate_feedback_config(cfg)


def build_variant(cfg, seed: int = 0):
    """(model in train mode, detectron2's optimizer for it), weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    return model, build_optimizer(cfg, model)


def compile_convolutions(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its backbone and head ``torch.compile``d (inductor): every conv of
    RetinaNet, in the same two graphs for stock and each rule; the anchors, matching and
    losses around them stay eager (detectron2's Python, the same for every variant)."""
    model.backbone = torch.compile(model.backbone)
    model.head = torch.compile(model.head)
    return model


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
