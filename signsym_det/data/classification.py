"""Embedded shapes CLASSIFICATION set, ImageNet layout (``train/<class>/*.png``, ``val/...``).

Image i: the detection set's own renderer (``shapes.render_sample``: same backgrounds,
distractor strokes, colours, noise and ``clutter``) draws exactly one object of the
detection classes on a ``canvas_size`` square; a square window around the object (side
1.25-1.75x the object's box, at least 3/4 of ``image_size``, shifted at random with the
object inside) is cut out and resized to ``image_size``: objects are large and near the
centre, as in ImageNet photos. Classes are balanced: image i of a split has class
``i % 6``; its sample is the first of the streams ``(seed, "cls", split, i, attempt)``
whose object has that class. These streams are disjoint from the detection set's, so the
two sets share no image. Deterministic: the same arguments (and renderer version) give
byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import write_dir_atomically
from .shapes import FORMAT_VERSION as SHAPES_FORMAT_VERSION
from .shapes import SHAPE_CLASSES, render_sample, resolve_params

FORMAT_NAME = "signsym_det.shapes_classification"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")
_STREAM = 0x636C73  # "cls": keeps these streams apart from the detection set's
_SPLIT_CODE = {"train": 1, "val": 2}
_MAX_ATTEMPTS = 500


def classification_params(
    *,
    seed: int = 0,
    num_train: int = 2400,
    num_val: int = 600,
    image_size: int = 64,
    canvas_size: int | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    clutter: float = 1.0,
) -> dict:
    """Checked generator arguments. Defaults: canvas 1.5x ``image_size``, object sizes (on
    the canvas) 1/4 .. 2/3 of the canvas; ``clutter`` is the detection set's."""
    if canvas_size is None:
        canvas_size = round(image_size * 1.5)
    if min_size is None:
        min_size = max(8, canvas_size // 4)
    if max_size is None:
        max_size = max(min_size, canvas_size * 2 // 3)
    if not 16 <= image_size <= canvas_size:
        raise ValueError("need 16 <= image_size <= canvas_size")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    params = dict(
        seed=seed, canvas_size=canvas_size, min_size=min_size, max_size=max_size, clutter=clutter
    )
    render = _render_params(params)
    return {
        "seed": render["seed"],
        "image_size": int(image_size),
        "canvas_size": render["image_size"],
        "min_size": render["min_size"],
        "max_size": render["max_size"],
        "clutter": render["clutter"],
        "num_train": int(num_train),
        "num_val": int(num_val),
        "renderer_version": SHAPES_FORMAT_VERSION,
    }


def _render_params(params: dict) -> dict:
    """The detection renderer's parameters for one single-object canvas."""
    return resolve_params(
        seed=params["seed"],
        image_size=params["canvas_size"],
        min_size=params["min_size"],
        max_size=params["max_size"],
        clutter=params["clutter"],
        min_objects=1,
        max_objects=1,
    )


def _crop_box(bbox, canvas: int, image_size: int, rng: np.random.Generator) -> tuple:
    """A square (left, top, right, bottom) holding the object box ``[x, y, w, h]``."""
    x, y, w, h = bbox
    side = max(w, h) * rng.uniform(1.25, 1.75)
    side = int(round(min(canvas, max(side, 0.75 * image_size, w, h))))
    # left edge: anywhere that keeps the whole box inside, then inside the canvas
    left = rng.uniform(x + w - side, x) if side > w else x
    top = rng.uniform(y + h - side, y) if side > h else y
    left = int(round(min(max(left, 0), canvas - side)))
    top = int(round(min(max(top, 0), canvas - side)))
    return left, top, left + side, top + side


def render_classification_sample(params: dict, split: str, index: int) -> tuple[np.ndarray, int]:
    """(image_size x image_size x 3 uint8 image, class index) of image ``index`` of ``split``."""
    wanted = index % len(SHAPE_CLASSES)
    render = _render_params(params)
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([params["seed"], _STREAM, _SPLIT_CODE[split], index, attempt])
        sample = render_sample(rng, render)
        (obj,) = sample["objects"]
        if obj["category_id"] - 1 != wanted:
            continue
        box = _crop_box(obj["bbox"], params["canvas_size"], params["image_size"], rng)
        size = (params["image_size"], params["image_size"])
        crop = Image.fromarray(sample["image"]).crop(box).resize(size, Image.LANCZOS)
        return np.asarray(crop), wanted
    raise RuntimeError(f"no {SHAPE_CLASSES[wanted]} in {_MAX_ATTEMPTS} draws")  # pragma: no cover


def read_classification_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a generated classification set at ``root``, or None."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return None
    return manifest


def _is_generated(root: Path) -> bool:
    return read_classification_manifest(root) is not None


def _write(root: Path, params: dict) -> dict:
    counts = {}
    for split in SPLITS:
        for name in SHAPE_CLASSES:
            (root / split / name).mkdir(parents=True)
        for index in range(params[f"num_{split}"]):
            image, label = render_classification_sample(params, split, index)
            path = root / split / SHAPE_CLASSES[label] / f"{index:06d}.png"
            Image.fromarray(image).save(path, compress_level=6)
        counts[split] = params[f"num_{split}"]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "params": params,
        "classes": list(SHAPE_CLASSES),
        "counts": counts,
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return manifest


def generate_classification_dataset(out_dir: str | os.PathLike, **kwargs) -> dict:
    """Write the set to ``out_dir`` (built in a temporary sibling, then renamed into place).

    Keyword arguments: see :func:`classification_params`. Only an empty directory or a
    previously generated classification set is replaced, and only by a complete new one;
    anything else: FileExistsError.
    Returns the manifest plus ``"root"``.
    """
    params = classification_params(**kwargs)
    out = Path(out_dir).absolute()
    manifest = write_dir_atomically(
        out, lambda tmp: _write(tmp, params), _is_generated, "shapes classification set"
    )
    return {**manifest, "root": str(out)}


def ensure_classification_dataset(root: str | os.PathLike, **kwargs) -> dict:
    """Generate the set at ``root`` unless it already holds one with the same parameters."""
    manifest = read_classification_manifest(root)
    if manifest is not None and manifest.get("params") == classification_params(**kwargs):
        return {**manifest, "root": str(Path(root).absolute()), "generated": False}
    return {**generate_classification_dataset(root, **kwargs), "generated": True}
