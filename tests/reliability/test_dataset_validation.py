"""Bad datasets fail in setup_cfg, before training, with one line naming file and id."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

from signsym_det.data.validate import box_problem, validate_datasets
from signsym_det.engine import setup_cfg

ROOT = Path(__file__).parents[2]
DEMO = str(ROOT / "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml")
_names = itertools.count()


def coco_set(tmp_path, boxes=((2, 3, 10, 8),), images=1):
    """A COCO json with ``images`` 32x24 PNGs and one annotation per box (ids 1, 2, ...)."""
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    entries = []
    for i in range(images):
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / f"{i}.png")
        entries.append({"id": i + 1, "file_name": f"{i}.png", "width": 32, "height": 24})
    anns = [
        {"id": k + 1, "image_id": 1, "bbox": list(b), "category_id": 1, "iscrowd": 0, "area": 1}
        for k, b in enumerate(boxes)
    ]
    data = {"images": entries, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, root


def register(path, root):
    name = f"reliability_set_{next(_names)}"
    register_coco_instances(name, {}, str(path), str(root))
    return name


def setup(name, *opts):
    return setup_cfg(DEMO, ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", *opts])


@pytest.mark.parametrize(
    "box, message",
    [
        ((2, 3, 0, 8), r"annotation id 2 \(image id 1\): bbox \[2, 3, 0, 8\] has width/height"),
        ((2, 3, 5, -1), r"annotation id 2.*width/height <= 0"),
        ((20, 3, 30, 8), r"annotation id 2.*outside the 32x24 image"),
        ((-5, 3, 3, 3), r"annotation id 2.*outside"),
        ((1, 2, 3), r"annotation id 2.*not \[x, y, w, h\]"),
        ((1, 2, float("nan"), 3), r"annotation id 2.*non-finite"),
    ],
)
def test_invalid_box_is_an_error_naming_file_and_id(tmp_path, box, message):
    path, root = coco_set(tmp_path, boxes=[(2, 3, 10, 8), box])
    with pytest.raises(ValueError, match=message) as caught:
        setup(register(path, root))
    assert str(path) in str(caught.value) and "INVALID_BOXES 'skip'" in str(caught.value)


def test_invalid_boxes_can_be_skipped(tmp_path, caplog):
    path, root = coco_set(tmp_path, boxes=[(2, 3, 10, 8), (2, 3, 0, 8), (30, 20, 9, 9)])
    name = register(path, root)
    cfg = setup(name, "DATASETS.INVALID_BOXES", "skip")
    assert "skipping 2 invalid boxes" in caplog.text
    (record,) = DatasetCatalog.get(name)
    assert [a["bbox"] for a in record["annotations"]] == [[2, 3, 10, 8]]
    assert validate_datasets(cfg) == {name: 2}  # idempotent: the loader is wrapped once
    assert len(DatasetCatalog.get(name)[0]["annotations"]) == 1


def test_unknown_mode_is_refused(tmp_path):
    name = register(*coco_set(tmp_path))
    with pytest.raises(ValueError, match=r"INVALID_BOXES = 'drop'; valid: \['error', 'skip'\]"):
        setup(name, "DATASETS.INVALID_BOXES", "drop")


@pytest.mark.parametrize(
    "content, error, message",
    [
        (None, FileNotFoundError, r"dataset json '.*instances.json' does not exist"),
        ("{not json", ValueError, r"instances.json: not valid JSON \(Expecting"),
        ("[1, 2]", ValueError, r"a COCO json is an object, not a list"),
        ('{"images": []}', ValueError, r"no 'annotations' list"),
        ('{"images": [{"id": 1}], "annotations": []}', ValueError, r"images\[0\] lacks"),
    ],
)
def test_bad_json_files(tmp_path, content, error, message):
    path, root = coco_set(tmp_path)
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(error, match=message):
        setup(register(path, root))


def test_missing_and_unreadable_images(tmp_path):
    path, root = coco_set(tmp_path, images=2)
    (root / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"image id 2: '.*1.png' is not a readable image"):
        setup(register(path, root))
    (root / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image id 2: '.*1.png' does not exist"):
        setup(register(path, root))


def test_unregistered_dataset_is_named(tmp_path):
    name = register(*coco_set(tmp_path))
    typo = name.replace("set", "sett")
    with pytest.raises(KeyError, match=rf"'{typo}' is not registered.*'{name}'"):
        setup(typo)


def test_box_problem_accepts_rounding_at_the_border():
    assert box_problem([0, 0, 32.4, 24], 32, 24) is None
    assert box_problem([-0.5, 0, 10, 10], 32, 24) is None
