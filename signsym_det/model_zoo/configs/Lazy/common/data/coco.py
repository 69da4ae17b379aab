"""detectron2's COCO dataloaders and evaluator (coco_2017_train / coco_2017_val)."""

from signsym_det.lazy import detectron2_config

dataloader = detectron2_config("common/data/coco.py", "dataloader")
