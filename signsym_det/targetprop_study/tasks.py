"""The study's ladder of classification tasks, rendered by the project's shapes renderers.

* ``mnist`` (MNIST-like): the silhouette (white on black) of one shape of 6 classes, drawn by
  the detection renderer (``render_sample``, its object mask) on a 32 px canvas;
* ``cluttered``: the shapes classification set's images (``render_classification_sample``:
  one object, the detection set's cluttered backgrounds and distractors, random colours);
* ``shape_colour`` (cluttered, many-class): one object anywhere on a cluttered 32 px canvas,
  class = its shape x the dominant channel (R, G or B) of its colour, 18 classes.

Images are RGB float tensors normalised with ImageNet mean/std (as the pretraining tool and the
detection configs), cached as ``{task}_{size}px_{seed}.pt`` (``{split: (images, labels)}``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..classification.data import IMAGENET_MEAN, IMAGENET_STD
from ..data.classification import classification_params, render_classification_sample
from ..data.shapes import render_sample, resolve_params, sample_rng


@dataclass(frozen=True)
class Task:
    """One rung of the ladder: its name, what it is, and its number of classes."""

    name: str
    description: str
    num_classes: int


TASKS = {
    task.name: task
    for task in (
        Task("mnist", "one white shape silhouette on black (MNIST-like), 6 classes", 6),
        Task("cluttered", "one shape on cluttered backgrounds with distractors, 6 classes", 6),
        Task(
            "shape_colour",
            "one shape anywhere on heavier clutter, class = shape x dominant colour channel of"
            " the object (R, G or B), 18 classes",
            18,
        ),
    )
}


def check_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def _single_shape(split: str, index: int, size: int, seed: int, clutter: float) -> tuple:
    params = classification_params(
        seed=seed, num_train=0, num_val=0, image_size=size, clutter=clutter
    )
    return render_classification_sample(params, split, index)


def _one_object(split: str, index: int, seed: int, **params) -> tuple:
    """``(sample, object)``: the detection renderer's image ``index`` of ``split`` on a 32 px
    canvas with exactly one object (``params``: its sizes and clutter)."""
    render = resolve_params(seed=seed, image_size=32, min_objects=1, max_objects=1, **params)
    sample = render_sample(sample_rng(seed, split, index), render)
    (obj,) = sample["objects"]
    return sample, obj


def _silhouette(split: str, index: int, size: int, seed: int) -> tuple:
    _, obj = _one_object(split, index, seed, min_size=14, max_size=26, clutter=0.0)
    mask = Image.fromarray(obj["mask"].astype(np.uint8) * 255).resize((size, size), Image.LANCZOS)
    return np.repeat(np.asarray(mask)[..., None], 3, 2), obj["category_id"] - 1


def _coloured(split: str, index: int, size: int, seed: int) -> tuple:
    sample, obj = _one_object(split, index, seed, min_size=12, max_size=24, clutter=1.0)
    colour = sample["image"][obj["mask"]].mean(0)  # the object's mean RGB
    label = (obj["category_id"] - 1) * 3 + int(colour.argmax())
    image = Image.fromarray(sample["image"]).resize((size, size), Image.LANCZOS)
    return np.asarray(image), label


def render_image(task: str, split: str, index: int, size: int, seed: int = 0) -> tuple:
    """``(size x size x 3 uint8 image, label)`` of image ``index`` of ``split`` of ``task``."""
    check_task(task)
    if task == "mnist":
        return _silhouette(split, index, size, seed)
    if task == "shape_colour":
        return _coloured(split, index, size, seed)
    return _single_shape(split, index, size, seed, 1.0)


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W, ImageNet mean/std on [0, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (x - mean[:, None, None]) / std[:, None, None]


def render_split(task: str, split: str, count: int, size: int, seed: int = 0) -> tuple:
    """``(images N x 3 x size x size, labels N)`` of the first ``count`` images of ``split``."""
    pairs = [render_image(task, split, index, size, seed) for index in range(count)]
    images = np.stack([image for image, _ in pairs])
    return normalise(images), torch.tensor([label for _, label in pairs])


def load_task(cache_dir: str, task: str, sizes: dict, image_size: int, seed: int = 0) -> dict:
    """``{split: (images, labels)}`` for ``sizes`` = ``{split: count}``, cached in ``cache_dir``
    (the renderer's splits: ``train`` and ``val``; ``test`` is drawn from val's streams after
    ``sizes["val"]``)."""
    check_task(task)
    path = os.path.join(cache_dir, f"{task}_{image_size}px_seed{seed}.pt")
    key = {"sizes": dict(sizes), "image_size": image_size, "seed": seed}
    if os.path.exists(path):
        cached = torch.load(path, weights_only=True)
        if cached["key"] == key:
            return cached["splits"]
    splits = {}
    offsets = {"train": 0, "val": 0, "test": sizes.get("val", 0)}
    for split, count in sizes.items():
        source = "train" if split == "train" else "val"
        images, labels = render_split(task, source, offsets[split] + count, image_size, seed)
        splits[split] = (images[offsets[split] :], labels[offsets[split] :])
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"key": key, "splits": splits}, tmp)
    os.replace(tmp, path)
    return splits
