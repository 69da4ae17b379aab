"""The whole chain on a tiny scale: pretrain with sign_symmetry -> convert -> RetinaNet via
cfg.MODEL.WEIGHTS in tools/train_net.py (FeedbackTrainer) -> fine-tune -> COCO AP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from checkpoint_helpers import ROOT, tiny_pretrain

from signsym_det.data.shapes import generate_detection_dataset

CONFIG = "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry_pretrained.yaml"
TINY = "SOLVER.MAX_ITER 2 SOLVER.IMS_PER_BATCH 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS () "
TINY += "DATALOADER.NUM_WORKERS 0 MODEL.FPN.OUT_CHANNELS 32 MODEL.FEEDBACK.ALIGNMENT_PERIOD 0 "
TINY += "MODEL.FEEDBACK.GRADIENT_ALIGNMENT_PERIOD 0"


@pytest.mark.slow
def test_pretrain_convert_finetune(tmp_path):
    pretrained = tiny_pretrain(tmp_path, "sign_symmetry") / "model_final.pth"
    weights = tmp_path / "R-18_sign_symmetry.pth"
    tool = [sys.executable, "tools/convert_pretrained.py", str(pretrained), str(weights)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DETECTRON2_DATASETS": str(tmp_path / "ds")}
    converted = subprocess.run(tool, cwd=ROOT, env=env, capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert "R-18 (basic blocks 2-2-2-2)" in converted.stdout and "fc.weight" in converted.stdout

    generate_detection_dataset(tmp_path / "ds" / "shapes", num_train=4, num_val=3)
    out = tmp_path / "det"
    cmd = [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *TINY.split()]
    cmd += ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert f"Loaded {weights}: rule recorded sign_symmetry, model sign_symmetry" in log
    assert "backbone 60/60 weights" in log
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert "bbox/AP" in set().union(*records)
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["feedback"] == {"rule": "sign_symmetry"}  # saved by FeedbackCheckpointer
    source = torch.load(weights, weights_only=True)["model"]["res3.0.shortcut.weight"]
    # fine-tuned for 2 iterations from the pretrained tensor: close, not equal
    tuned = final["model"]["backbone.bottom_up.res3.0.shortcut.weight"]
    assert not torch.equal(tuned, source) and torch.allclose(tuned, source, atol=0.05)
