"""Shared by the reliability tests: a one-image shapes set (one torch thread: tests/conftest.py)."""

import os

import pytest


@pytest.fixture
def one_image_env(tmp_path):
    """Environment whose $DETECTRON2_DATASETS/shapes holds 1 train / 1 val image: every
    batch is then the same image, so data order cannot make two runs differ."""
    from signsym_det.data.register import ensure_shapes_dataset

    root = tmp_path / "datasets"
    ensure_shapes_dataset(root / "shapes", num_train=1, num_val=1)
    return {**os.environ, "DETECTRON2_DATASETS": str(root), "OMP_NUM_THREADS": "1"}
