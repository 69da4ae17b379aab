"""COCOEvaluator with detectron2's C++ COCO evaluation (use_fast_impl=True) on a tiny dataset
gives the AP that pycocotools computes from the same boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from detectron2_ops_marks import needs_detectron2_c
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

pytestmark = needs_detectron2_c
CLASSES = ["circle", "square"]
SIZE = 100
# image id -> ground truth [(class, x0, y0, x1, y1)] and detections [(class, x0, y0, x1, y1, score)]
GROUND_TRUTH = {
    1: [(0, 10, 10, 50, 50), (0, 60, 60, 90, 95)],
    2: [(1, 20, 30, 70, 80)],
    3: [(0, 5, 5, 40, 30), (1, 50, 10, 95, 45)],
}
DETECTIONS = {
    1: [(0, 12, 11, 50, 52, 0.9), (0, 60, 50, 95, 90, 0.8), (0, 70, 5, 95, 30, 0.95)],
    2: [(1, 22, 28, 72, 75, 0.7), (1, 25, 35, 70, 85, 0.6), (0, 20, 30, 70, 80, 0.3)],
    3: [(1, 52, 12, 90, 48, 0.85), (1, 0, 0, 30, 30, 0.5)],
}


def dataset_dicts() -> list[dict]:
    return [
        {
            "file_name": f"{image_id}.jpg",
            "image_id": image_id,
            "height": SIZE,
            "width": SIZE,
            "annotations": [
                {"bbox": list(box), "bbox_mode": 0, "category_id": cls, "iscrowd": 0}
                for cls, *box in boxes
            ],
        }
        for image_id, boxes in GROUND_TRUTH.items()
    ]


@pytest.fixture
def dataset():
    name = "signsym_det_tiny_coco_eval"
    DatasetCatalog.register(name, dataset_dicts)
    MetadataCatalog.get(name).set(thing_classes=CLASSES)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def xywh(x0, y0, x1, y1) -> list:
    return [x0, y0, x1 - x0, y1 - y0]


def pycocotools_stats(tmp_path) -> np.ndarray:
    """COCOeval's 12 summary numbers, from a COCO json written here (category ids 1, 2)."""
    boxes = [(i, cls, box) for i, gt in GROUND_TRUTH.items() for cls, *box in gt]
    annotations = [
        {"id": k + 1, "image_id": i, "category_id": cls + 1, "bbox": xywh(*box), "iscrowd": 0,
         "area": (box[2] - box[0]) * (box[3] - box[1])}
        for k, (i, cls, box) in enumerate(boxes)
    ]  # fmt: skip
    gt = {
        "images": [{"id": i, "height": SIZE, "width": SIZE} for i in GROUND_TRUTH],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = COCO(str(tmp_path / "gt.json"))
    detections = [
        {"image_id": i, "category_id": cls + 1, "bbox": xywh(*box), "score": score}
        for i, dets in DETECTIONS.items()
        for cls, *box, score in dets
    ]
    evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation.stats


def test_fast_coco_evaluator_matches_pycocotools(dataset, tmp_path, monkeypatch):
    from detectron2 import _C
    from detectron2.evaluation import coco_evaluation, fast_eval_api

    assert coco_evaluation.COCOeval_opt is fast_eval_api.COCOeval_opt is not COCOeval
    calls = []
    accumulate = _C.COCOevalAccumulate
    monkeypatch.setattr(_C, "COCOevalAccumulate", lambda *a: calls.append(1) or accumulate(*a))

    evaluator = COCOEvaluator(
        dataset, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "d2"),
        use_fast_impl=True,
    )  # fmt: skip
    evaluator.reset()
    for image_id, dets in DETECTIONS.items():
        instances = Instances((SIZE, SIZE))
        instances.pred_boxes = Boxes(torch.tensor([d[1:5] for d in dets], dtype=torch.float32))
        instances.scores = torch.tensor([d[5] for d in dets])
        instances.pred_classes = torch.tensor([d[0] for d in dets])
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    results = evaluator.evaluate()["bbox"]
    assert calls, "the C++ COCOevalAccumulate did not run"

    stats = pycocotools_stats(tmp_path)
    assert 0 < stats[0] < 1  # neither trivial nor empty
    for key, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats[:6]):
        expected = 100 * value if value >= 0 else float("nan")
        assert results[key] == pytest.approx(expected, abs=1e-6, nan_ok=True), key
