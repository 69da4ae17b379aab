"""Tests of the synthetic shapes detection dataset, its registration and its CLI."""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signsym_det.data.shapes import (
    SHAPE_CLASSES,
    generate_detection_dataset,
    render_sample,
    resolve_params,
    sample_rng,
)

SMALL = dict(num_train=12, num_val=4)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return generate_detection_dataset(root, seed=3, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes(dataset, tmp_path):
    again = generate_detection_dataset(tmp_path / "again", seed=3, **SMALL)
    a, b = _files(Path(dataset["root"])), _files(Path(again["root"]))
    assert len(a) == 12 + 4 + 3  # pngs, two jsons, manifest
    assert a == b
    other = _files(Path(generate_detection_dataset(tmp_path / "other", seed=4, **SMALL)["root"]))
    assert other.keys() == a.keys()
    assert other["annotations/instances_train.json"] != a["annotations/instances_train.json"]
    assert all(other[k] != a[k] for k in a if k.endswith(".png"))


def test_coco_json_is_valid(dataset):
    from pycocotools.coco import COCO

    for split in ("train", "val"):
        coco = COCO(dataset[f"{split}_json"])
        assert len(coco.getImgIds()) == dataset[f"num_{split}"]
        assert sorted(coco.getCatIds()) == list(range(1, len(SHAPE_CLASSES) + 1))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) == dataset[f"num_{split}_objects"] >= dataset[f"num_{split}"]
        objects_per_image = []
        for img in coco.loadImgs(coco.getImgIds()):
            assert Image.open(Path(dataset[f"{split}_dir"]) / img["file_name"]).size == (
                img["width"],
                img["height"],
            )
            objects_per_image.append(len(coco.getAnnIds(imgIds=img["id"])))
        params = resolve_params(seed=3, **SMALL)
        assert min(objects_per_image) >= params["min_objects"], objects_per_image
        assert max(objects_per_image) <= params["max_objects"], objects_per_image
        for a in anns:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= 128 and y + h <= 128
            assert 0 < a["area"] <= w * h and a["iscrowd"] == 0


def test_boxes_are_tight_and_match_files(dataset):
    params = resolve_params(seed=3, **SMALL)
    coco = json.loads(Path(dataset["train_json"]).read_text())
    for img in coco["images"][:6]:
        sample = render_sample(sample_rng(3, "train", img["id"] - 1), params)
        on_disk = np.asarray(Image.open(Path(dataset["train_dir"]) / img["file_name"]))
        np.testing.assert_array_equal(on_disk, sample["image"])
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert [a["bbox"] for a in anns] == [o["bbox"] for o in sample["objects"]]
        diff = np.abs(sample["image"].astype(int) - sample["background"]).sum(2)
        for obj in sample["objects"]:
            x, y, w, h = obj["bbox"]
            m = obj["mask"]
            assert m.sum() == obj["area"] and not m[:y].any() and not m[y + h :].any()
            assert not m[:, :x].any() and not m[:, x + w :].any()
            # every box edge touches the object's visible pixels
            assert m[y, x : x + w].any() and m[y + h - 1, x : x + w].any()
            assert m[y : y + h, x].any() and m[y : y + h, x + w - 1].any()
            assert diff[m].mean() > 40  # the object is visible against its background
            assert obj["visible_fraction"] >= 1 - params["max_occlusion"]


def test_classes_balanced_and_sizes_spread():
    params = resolve_params(seed=0)
    counts, sides = Counter(), []
    for i in range(120):
        for obj in render_sample(sample_rng(0, "train", i), params)["objects"]:
            counts[obj["name"]] += 1
            sides.append(max(obj["bbox"][2:]))
    assert set(counts) == set(SHAPE_CLASSES)
    mean = sum(counts.values()) / len(SHAPE_CLASSES)
    assert all(0.6 * mean < c < 1.4 * mean for c in counts.values()), counts
    assert min(sides) <= 14 and max(sides) >= 50


def test_ensure_and_register(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog

    from signsym_det.data.register import ensure_shapes_dataset, register_shapes_dataset

    root = tmp_path / "shapes"
    s = ensure_shapes_dataset(root, seed=1, **SMALL)
    assert s["generated"] and (root / "manifest.json").is_file()
    assert ensure_shapes_dataset(root, seed=1, **SMALL)["generated"] is False
    prefix = f"shapes_test_{uuid.uuid4().hex[:8]}"
    names = register_shapes_dataset(root, name_prefix=prefix)
    try:
        assert names == [f"{prefix}_train", f"{prefix}_val"]
        assert register_shapes_dataset(root, name_prefix=prefix) == names  # idempotent
        dicts = DatasetCatalog.get(f"{prefix}_train")
        assert len(dicts) == SMALL["num_train"]
        assert sum(len(d["annotations"]) for d in dicts) == s["num_train_objects"]
        assert len(DatasetCatalog.get(f"{prefix}_val")) == SMALL["num_val"]
        with pytest.raises(ValueError):
            register_shapes_dataset(tmp_path / "elsewhere", name_prefix=prefix)
    finally:
        for name in names:
            DatasetCatalog.remove(name)
    # other sizes: regenerated in place (the old set was a generated one)
    s2 = ensure_shapes_dataset(root, seed=1, num_train=5, num_val=2)
    assert s2["generated"] and len(list((root / "train").glob("*.png"))) == 5
    # a directory with foreign content is never touched
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        ensure_shapes_dataset(foreign, num_train=2, num_val=1)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def _load_cli():
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "tools/make_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_and_refuses_foreign_dir(tmp_path, capsys):
    cli = _load_cli()
    out = tmp_path / "cli"
    assert cli.main(["--out", str(out), "--num-train", "3", "--num-val", "2"]) == 0
    assert "train 3 images" in capsys.readouterr().out
    assert len(list((out / "val").glob("*.png"))) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.md").write_text("x")
    assert cli.main(["--out", str(foreign), "--num-train", "2", "--num-val", "1"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.md"]
