"""Check the datasets a config names before training: one-line errors naming file and id.

For every name in ``cfg.DATASETS.TRAIN``/``TEST`` registered with a COCO json
(``MetadataCatalog.get(name).json_file``, as ``register_coco_instances`` and detectron2's
builtin COCO sets record it):

* the json must exist and parse, with ``images`` (``id``, ``file_name``, ``width``,
  ``height``) and ``annotations`` lists;
* every box ``[x, y, w, h]`` must be 4 finite numbers with ``w > 0``, ``h > 0``, inside its
  image (``BOX_TOLERANCE`` px of slack for rounding). ``cfg.DATASETS.INVALID_BOXES``:
  ``"error"`` raises ValueError naming the file and annotation id; ``"skip"`` logs them
  and drops such boxes from the training dicts (evaluation reads the json itself);
* image files must exist and be readable images: all of them for small sets, an evenly
  spaced sample of ``MAX_IMAGES_CHECKED`` for big ones.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os

logger = logging.getLogger(__name__)

MODES = ("error", "skip")
BOX_TOLERANCE = 1.0
MAX_IMAGES_CHECKED = 64


def add_dataset_validation_config(cfg):
    """Add ``cfg.DATASETS.INVALID_BOXES`` ("error" | "skip"), in place."""
    cfg.DATASETS.INVALID_BOXES = "error"


def box_problem(bbox, width, height) -> str | None:
    """Why a COCO ``[x, y, w, h]`` box is invalid in a ``width`` x ``height`` image, or None."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bbox {bbox!r} is not [x, y, w, h]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox) or not all(
        math.isfinite(v) for v in bbox
    ):
        return f"bbox {bbox!r} has a non-finite or non-numeric value"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {list(bbox)} has width/height <= 0"
    slack = BOX_TOLERANCE
    if x < -slack or y < -slack or x + w > width + slack or y + h > height + slack:
        return f"bbox {list(bbox)} is outside the {width}x{height} image"
    return None


def read_coco_json(path) -> dict:
    """The parsed COCO json at ``path``; FileNotFoundError / ValueError in one line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset json {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a COCO json is an object, not a {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: no {key!r} list (not a COCO instances json)")
    return data


def _images_by_id(data: dict, path: str) -> dict:
    images = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not {"id", "file_name", "width", "height"} <= set(image):
            raise ValueError(
                f"{path}: images[{index}] lacks id/file_name/width/height: {str(image)[:80]}"
            )
        image_id = image["id"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise ValueError(f"{path}: images[{index}] has id {image_id!r}; expected an int")
        if not all(_positive(image[k]) for k in ("width", "height")):
            raise ValueError(f"{path}: image id {image_id!r} has no positive width/height")
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise ValueError(f"{path}: image id {image_id!r} has file_name {image['file_name']!r}")
        images[image_id] = image
    return images


def _positive(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def check_annotations(data: dict, path: str, mode: str = "error") -> list[str]:
    """One message per invalid annotation; raises ValueError on the first if mode is "error"."""
    images = _images_by_id(data, path)
    problems = []
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise ValueError(f"{path}: annotations[{index}] is not an object")
        ann_id = ann.get("id", f"#{index}")
        image_id = ann.get("image_id")
        image = images.get(image_id) if isinstance(image_id, (int, str)) else None
        if image is None:
            raise ValueError(
                f"{path}: annotation id {ann_id} names image_id {image_id!r}, "
                "which is not in 'images'"
            )
        problem = box_problem(ann.get("bbox"), image["width"], image["height"])
        if problem is None:
            continue
        message = f"{path}: annotation id {ann_id} (image id {image['id']}): {problem}"
        if mode == "error":
            raise ValueError(
                f"{message}; fix the file or set cfg.DATASETS.INVALID_BOXES 'skip' to drop "
                "such boxes"
            )
        problems.append(message)
    return problems


def check_images(data: dict, image_root, path: str, limit: int = MAX_IMAGES_CHECKED) -> int:
    """Open (a sample of) the json's images; FileNotFoundError / ValueError naming the first
    missing or unreadable one. Returns how many were checked."""
    from PIL import Image

    entries = data["images"]
    if len(entries) > limit:
        step = len(entries) / limit
        entries = [entries[int(i * step)] for i in range(limit)]
    for image in entries:
        file = os.path.join(os.fspath(image_root), image["file_name"])
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{path}: image id {image['id']}: {file!r} does not exist")
        try:
            with Image.open(file) as im:
                im.verify()
        except Exception as error:  # PIL raises many types for broken files
            raise ValueError(
                f"{path}: image id {image['id']}: {file!r} is not a readable image "
                f"({type(error).__name__})"
            ) from None
    return len(entries)


def _skipping(loader):
    """A dataset loader that drops the annotations :func:`box_problem` rejects."""

    def load():
        dicts = loader()
        for record in dicts:
            record["annotations"] = [
                a
                for a in record.get("annotations", [])
                if box_problem(a.get("bbox"), record["width"], record["height"]) is None
            ]
        return dicts

    load.skips_invalid_boxes = True
    return load


def validate_datasets(cfg) -> dict:
    """Check every dataset ``cfg.DATASETS`` names (module docstring). Returns
    ``{name: number of invalid boxes skipped}`` for the COCO-json sets checked."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    mode = cfg.DATASETS.INVALID_BOXES
    if mode not in MODES:
        raise ValueError(f"cfg.DATASETS.INVALID_BOXES = {mode!r}; valid: {list(MODES)}")
    checked = {}
    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name in checked:
                continue
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise KeyError(f"cfg.DATASETS.{key}: dataset {name!r} is not registered{hint}")
            meta = MetadataCatalog.get(name)
            json_file = getattr(meta, "json_file", None)
            if not json_file:
                continue  # not a COCO-json set: its own loader checks it
            data = read_coco_json(json_file)
            problems = check_annotations(data, json_file, mode)
            check_images(data, getattr(meta, "image_root", ""), json_file)
            if problems:
                logger.warning(
                    "dataset %s: skipping %d invalid boxes (cfg.DATASETS.INVALID_BOXES skip), "
                    "e.g. %s",
                    name,
                    len(problems),
                    problems[0],
                )
                loader = DatasetCatalog[name]  # the registered function
                if not getattr(loader, "skips_invalid_boxes", False):
                    DatasetCatalog.remove(name)
                    DatasetCatalog.register(name, _skipping(loader))
            checked[name] = len(problems)
    return checked
