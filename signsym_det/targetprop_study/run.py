"""One study run: train a layered convnet on a task by one algorithm, in memory, on one thread.

Adam (constant ``lr``) on the forward layers for every algorithm; DTP-family inverses get their
own Adam (``inverse_lr``). A feedback rule trains every hidden layer and leaves the output layer
to backprop (as Xiao et al. and the pretraining tool); DFA and DTP as in
:mod:`signsym_det.targetprop`. Every ``eval_every`` steps: test top-1 and mean cross-entropy;
every ``angle_every`` steps: the angle (degrees) between the algorithm's weight gradient and
backprop's per layer (:func:`~signsym_det.targetprop.update_angles`).
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F

from ..classification.model import LAYERED_ALGORITHMS, build_convnet, convnet_spec
from ..feedback import available_rules
from ..targetprop import (
    VARIANTS,
    DTPStep,
    backprop_gradients,
    layer_gradients,
    make_inverse_optimizers,
    update_angles,
)

ARCHS = {"conv": "convnet", "lc": "convnet_lc"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on (its JSON records these fields)."""

    task: str
    algorithm: str
    arch: str  # "conv" or "lc"
    seed: int
    lr: float
    steps: int = 400
    batch_size: int = 32
    image_size: int = 24
    channels: tuple = (16, 32, 32)
    kernel_size: int = 5
    stride: int = 2
    activation: str = "tanh"
    inverse_lr: float = 1e-3
    inverse_noise: float = 0.1
    beta: float = 0.5
    eval_every: int = 100
    angle_every: int = 50

    def __post_init__(self):
        valid = (*available_rules(), *LAYERED_ALGORITHMS)
        if self.algorithm not in valid:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; valid: {valid}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; valid: {tuple(ARCHS)}")
        if not (self.lr > 0 and self.steps > 0 and self.batch_size > 0):
            raise ValueError(f"lr, steps and batch_size must be > 0: {self}")

    def name(self) -> str:
        """A unique file stem: ``{task}-{arch}-{algorithm}-lr{lr:g}-s{seed}``."""
        return f"{self.task}-{self.arch}-{self.algorithm}-lr{self.lr:g}-s{self.seed}"


@torch.no_grad()
def evaluate(model, images, labels, batch_size: int = 500) -> dict:
    """``{"top1": percent, "loss": mean cross-entropy}`` of ``model`` (its logits) on a split."""
    correct, loss = 0, 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        target = labels[start : start + batch_size]
        correct += int((logits.argmax(1) == target).sum())
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
    return {"top1": 100.0 * correct / len(labels), "loss": loss / len(labels)}


def build(config: RunConfig, num_classes: int):
    """``(net, step)``: the network and ``step(images, labels, iteration) -> cross-entropy``."""
    aux = num_classes if config.algorithm == "ao_sdtp" else 0
    spec = convnet_spec(
        ARCHS[config.arch],
        num_classes,
        config.image_size,
        channels=config.channels,
        kernel_size=config.kernel_size,
        stride=config.stride,
        activation=config.activation,
        aux_outputs=aux,
    )
    torch.manual_seed(config.seed)
    net = build_convnet(spec, config.algorithm, seed=config.seed)
    optimizer = torch.optim.Adam(net.layers.parameters(), lr=config.lr)
    if config.algorithm in VARIANTS:
        inverse = make_inverse_optimizers(net, config.algorithm, config.inverse_lr)
        dtp = DTPStep(
            net,
            optimizer,
            inverse,
            variant=config.algorithm,
            beta=config.beta,
            noise=config.inverse_noise,
            seed=config.seed,
        )
        return spec, net, lambda x, y, i: dtp(x, y, i)["total_loss"]

    def step(x, y, iteration):
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return spec, net, step


def train(config: RunConfig, splits: dict, num_classes: int, log=None) -> tuple:
    """Train by ``config`` on ``splits["train"]``, evaluate on ``splits[eval_split]`` ("test",
    or "val" if there is no test split). Returns ``(record, checkpoint)``: the run's plain
    record (config, curves, angles, final top-1, wall and CPU time) and a weights-only
    checkpoint in the layered layout of ``python -m signsym_det.pretrain_net``."""
    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), time.process_time()
    spec, net, step = build(config, num_classes)
    images, labels = splits["train"]
    eval_split = "test" if "test" in splits else "val"
    generator = torch.Generator().manual_seed(config.seed)
    order, position = torch.randperm(len(labels), generator=generator), 0
    curve, angles, losses = [], [], []
    for iteration in range(config.steps):
        if position + config.batch_size > len(order):
            order, position = torch.randperm(len(labels), generator=generator), 0
        batch = order[position : position + config.batch_size]
        position += config.batch_size
        x, y = images[batch], labels[batch]
        due = (iteration + 1) % config.angle_every == 0
        reference = backprop_gradients(net, x, y) if due else None
        losses.append(float(step(x, y, iteration)))
        if not math.isfinite(losses[-1]):
            break
        if due:
            angles.append({"step": iteration + 1, **update_angles(layer_gradients(net), reference)})
        if (iteration + 1) % config.eval_every == 0 or iteration + 1 == config.steps:
            result = evaluate(net.compose, *splits[eval_split])
            window = losses[-config.eval_every :]
            curve.append(
                {
                    "step": iteration + 1,
                    "train_loss": sum(window) / len(window),
                    f"{eval_split}_top1": result["top1"],
                    f"{eval_split}_loss": result["loss"],
                }
            )
            if log is not None:
                log(
                    f"{config.name()} step {iteration + 1}/{config.steps} "
                    f"loss {curve[-1]['train_loss']:.3f} {eval_split} top-1 {result['top1']:.1f}%"
                )
    final = curve[-1][f"{eval_split}_top1"] if curve and math.isfinite(losses[-1]) else None
    record = {
        "config": dataclasses.asdict(config),
        "eval_split": eval_split,
        "top1": final,
        "diverged": not math.isfinite(losses[-1]),
        "curve": curve,
        "angles": angles,
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }
    checkpoint = {
        "model": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "arch": ARCHS[config.arch],
        "algorithm": config.algorithm,
        "convnet": dataclasses.asdict(spec),
        "layout": "layered",
        "num_classes": num_classes,
        "iteration": config.steps,
        "feedback": {"rule": config.algorithm} if config.algorithm in available_rules() else None,
        "__author__": "signsym_det",
    }
    return record, checkpoint
