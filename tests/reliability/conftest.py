"""Shared by the reliability tests: one torch thread, a one-image shapes set."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small convolutions are far slower with two threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_image_env(tmp_path):
    """Environment whose $DETECTRON2_DATASETS/shapes holds 1 train / 1 val image: every
    batch is then the same image, so data order cannot make two runs differ."""
    from signsym_det.data.register import ensure_shapes_dataset

    root = tmp_path / "datasets"
    ensure_shapes_dataset(root / "shapes", num_train=1, num_val=1)
    return {**os.environ, "DETECTRON2_DATASETS": str(root), "OMP_NUM_THREADS": "1"}
