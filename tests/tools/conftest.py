"""Shared by the end-to-end tool tests: a tiny generated shapes set and tiny-run options."""

import os

import pytest
from repo_process import run_python

from signsym_det.data.shapes import generate_detection_dataset

_TINY_RUN = (
    "SOLVER.MAX_ITER 3 SOLVER.IMS_PER_BATCH 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS () "
    "DATALOADER.NUM_WORKERS 0 MODEL.FPN.OUT_CHANNELS 16 MODEL.FEEDBACK.ALIGNMENT_PERIOD 1"
).split()


@pytest.fixture
def tiny_shapes_env(tmp_path):
    """Environment whose $DETECTRON2_DATASETS/shapes is a 4-train / 3-val shapes set."""
    root = tmp_path / "datasets"
    generate_detection_dataset(root / "shapes", num_train=4, num_val=3)
    return {**os.environ, "DETECTRON2_DATASETS": str(root)}


@pytest.fixture
def tiny_run():
    """detectron2 options that make a Shapes-Demo config train in seconds."""
    return list(_TINY_RUN)


@pytest.fixture
def run_tool():
    """``run_tool(env, *args)``: ``python <args>`` in the repo root; output, or fail with it."""
    return _run_tool


def _run_tool(env, *args, timeout=400):
    proc = run_python(env, *args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr
