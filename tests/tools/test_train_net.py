"""tools/train_net.py end to end on a tiny generated shapes set: train, then --eval-only."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
CONFIG = "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml"
TINY = [
    "SOLVER.MAX_ITER",
    "3",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.FEEDBACK.ALIGNMENT_PERIOD",
    "1",
    "MODEL.FEEDBACK.GRADIENT_ALIGNMENT_PERIOD",
    "2",
]


def run(tmp_path, *args):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    cmd = [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_then_eval_only(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "tools/make_dataset.py",
            "--out",
            str(tmp_path / "datasets" / "shapes"),
            "--num-train",
            "4",
            "--num-val",
            "3",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out"
    run(tmp_path, *TINY, "OUTPUT_DIR", str(out))
    assert (out / "model_final.pth").is_file()
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    keys = set().union(*records)
    assert {
        "weight_angle/backbone",
        "weight_angle/fpn",
        "weight_angle/head",
        "weight_angle/predictor",
        "grad_angle/backbone",
        "total_loss",
    } <= keys
    assert "bbox/AP" in keys  # the final COCOEvaluator run
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard event file"

    log = run(
        tmp_path,
        "--eval-only",
        *TINY,
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
    )
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    result = json.loads(
        (tmp_path / "eval" / "inference" / "shapes_val" / "coco_instances_results.json").read_text()
    )
    assert isinstance(result, list)
