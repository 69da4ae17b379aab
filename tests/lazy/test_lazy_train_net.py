"""python -m signsym_det.lazy_train_net end to end on a tiny generated shapes set."""

import json
import os

import pytest
import torch
from eval_results_check import assert_written_as_printed
from repo_process import run_python

from signsym_det.data.shapes import generate_detection_dataset

pytestmark = pytest.mark.slow  # subprocess training runs

CONFIG = "configs/Lazy/Shapes-Demo/retinanet_R_18_FPN.py"
TINY = [
    "train.max_iter=3",
    "train.checkpointer.period=2",
    "train.alignment_period=1",
    "train.gradient_alignment_period=2",
    "train.log_period=1",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "model.feedback.rule=fa",  # from the command line: sign_symmetry in the file
]


def test_train_resume_refuse_and_evaluate(tmp_path):
    generate_detection_dataset(tmp_path / "datasets" / "shapes", num_train=4, num_val=3)
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"

    def run(*args, ok=True):
        proc = run_python(env, "tools/lazy_train_net.py", "--config-file", CONFIG, *args)
        assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    run(*TINY, f"train.output_dir={out}")
    state = torch.load(out / "model_final.pth", weights_only=True)
    assert state["iteration"] == 2
    assert state["model_attributes"]["loss_normalizer"] > 0
    # fa with fixed_feedback "store": each layer's B is in the checkpoint
    assert "head.cls_score.feedback_weight" in state["model"]
    assert "rule: fa" in (out / "config.yaml").read_text()
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    keys = set().union(*records)
    assert {"total_loss", "weight_angle/backbone", "weight_angle/predictor"} <= keys
    assert "grad_angle/head" in keys
    assert "bbox/AP" in keys  # the final COCOEvaluator run

    log = run(*TINY, f"train.output_dir={out}", ok=False)  # never over a finished run
    assert "train.output_dir" in log and "already holds a run" in log
    run("--resume", *TINY, "train.max_iter=4", f"train.output_dir={out}")
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 3

    log = run(
        "--eval-only",
        *TINY,
        f"train.output_dir={tmp_path / 'eval'}",
        f"train.init_checkpoint={out / 'model_final.pth'}",
    )
    assert_written_as_printed(log, tmp_path / "eval")
