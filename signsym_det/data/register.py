"""detectron2 registration of the synthetic shapes dataset (``shapes_train``/``shapes_val``)."""

from __future__ import annotations

import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .shapes import (
    FORMAT_VERSION,
    SHAPE_CLASSES,
    SPLITS,
    check_target_dir,
    generate_detection_dataset,
    read_manifest,
    resolve_params,
    summary,
)

__all__ = [
    "SHAPE_CLASSES",
    "ensure_shapes_dataset",
    "register_embedded_datasets",
    "register_shapes_dataset",
    "shapes_root",
]


def _is_complete(root: Path, manifest: dict) -> bool:
    s = summary(root, manifest)
    return all(Path(s[f"{split}_json"]).is_file() for split in SPLITS)


def ensure_shapes_dataset(root: str | os.PathLike, seed: int = 0, **sizes) -> dict:
    """Make sure ``root`` holds the shapes dataset for ``seed`` and ``sizes``; return its summary.

    ``sizes`` are further :func:`~signsym_det.data.shapes.generate_detection_dataset`
    arguments (``num_train``, ``num_val``, ``image_size``, ...). Nothing is done when the
    manifest in ``root`` records the same parameters. Otherwise the set is (re)generated in
    a temporary directory and renamed into place; only an empty directory or a previously
    generated dataset is ever replaced. Raises FileExistsError if ``root`` exists with other
    content. The summary has ``"generated": True`` if the set was written by this call.
    """
    root = Path(root)
    params = resolve_params(seed=seed, **sizes)
    manifest = read_manifest(root)
    if (
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("params") == params
        and _is_complete(root, manifest)
    ):
        return {**summary(root, manifest), "generated": False}
    check_target_dir(root)
    return {**generate_detection_dataset(root, **params), "generated": True}


def register_shapes_dataset(root: str | os.PathLike, name_prefix: str = "shapes") -> list[str]:
    """Register ``{name_prefix}_train`` and ``{name_prefix}_val`` (COCO json) from ``root``.

    Idempotent: a name already registered with the same json file and image root is left
    as it is; one registered with other paths raises ValueError. Returns the names.
    """
    root = Path(root).resolve()
    names = []
    for split in SPLITS:
        name = f"{name_prefix}_{split}"
        json_file = str(root / "annotations" / f"instances_{split}.json")
        image_root = str(root / split)
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            old = (getattr(meta, "json_file", None), getattr(meta, "image_root", None))
            if old != (json_file, image_root):
                raise ValueError(
                    f"dataset {name!r} is already registered with json_file={old[0]!r}, "
                    f"image_root={old[1]!r}; cannot re-register it for {root}"
                )
        else:
            register_coco_instances(
                name, {"thing_classes": list(SHAPE_CLASSES)}, json_file, image_root
            )
        names.append(name)
    return names


def shapes_root() -> Path:
    """Where the embedded set lives: ``$DETECTRON2_DATASETS/shapes`` (default ``datasets/``)."""
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")) / "shapes"


def register_embedded_datasets(cfg, root: str | os.PathLike | None = None) -> list[str]:
    """Register the shapes set at ``root`` if ``cfg.DATASETS`` names it, generating the
    default set first if ``root`` holds none (a set made by tools/make_dataset.py is used
    as it is, whatever its size).

    Checks that RetinaNet/ROI heads predict as many classes as the set has. Returns the
    registered names ([] when the config uses other datasets, e.g. coco_2017_*).
    """
    wanted = [n for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if n.startswith("shapes_")]
    if not wanted:
        return []
    key = "RETINANET" if "RetinaNet" in _meta_arch(cfg) else "ROI_HEADS"
    num = cfg.MODEL[key].NUM_CLASSES
    if num != len(SHAPE_CLASSES):
        raise ValueError(
            f"cfg.MODEL.{key}.NUM_CLASSES = {num}, but the datasets {wanted} have "
            f"{len(SHAPE_CLASSES)} classes {list(SHAPE_CLASSES)}"
        )
    root = Path(root) if root is not None else shapes_root()
    manifest = read_manifest(root)
    if manifest is None or not _is_complete(root, manifest):
        ensure_shapes_dataset(root)  # the default set; tools/make_dataset.py makes others
    elif manifest.get("format_version") != FORMAT_VERSION:  # made by an older generator
        kept = ("seed", "num_train", "num_val", "image_size")
        ensure_shapes_dataset(root, **{k: v for k, v in manifest["params"].items() if k in kept})
    return register_shapes_dataset(root)


def _meta_arch(cfg) -> str:
    name = cfg.MODEL.META_ARCHITECTURE
    return cfg.MODEL.FEEDBACK.META_ARCHITECTURE if name == "FeedbackDetector" else name
