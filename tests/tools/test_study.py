"""tools/study.py: a 2-iteration study on a tiny set runs, reports, and resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from signsym_det.study import parse_variant, plan_runs

ROOT = Path(__file__).parents[2]


def test_parse_variant():
    assert parse_variant("fa") == ("fa", ["MODEL.FEEDBACK.RULE", "fa"])
    name, opts = parse_variant("ss_bp:MODEL.FEEDBACK.RULE=sign_symmetry,MODEL.FEEDBACK.SEED=3")
    assert (name, opts) == (
        "ss_bp",
        ["MODEL.FEEDBACK.RULE", "sign_symmetry", "MODEL.FEEDBACK.SEED", "3"],
    )
    with pytest.raises(ValueError, match="not_a_rule"):
        parse_variant("not_a_rule")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_variant("x:MODEL.FEEDBACK.RULE")


def test_plan_runs_rejects_duplicate_names(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        plan_runs(tmp_path, ["fa", "fa"], [0])
    runs = plan_runs(tmp_path, ["bp", "fa"], [0, 1], ["SOLVER.MAX_ITER", "2"])
    assert [(r.variant, r.seed) for r in runs] == [("bp", 0), ("fa", 0), ("bp", 1), ("fa", 1)]
    assert runs[3].output_dir == tmp_path / "fa" / "seed1"
    assert runs[3].opts[-2:] == ["SOLVER.MAX_ITER", "2"]


def test_tiny_study_runs_reports_and_resumes(tmp_path):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    subprocess.run(
        [
            sys.executable,
            "tools/make_dataset.py",
            "--out",
            str(tmp_path / "datasets" / "shapes"),
            "--num-train",
            "4",
            "--num-val",
            "2",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    cmd = [
        sys.executable,
        "tools/study.py",
        "--config-file",
        "configs/Shapes-Demo/Base-Shapes-RetinaNet-R18.yaml",
        "--out",
        str(tmp_path / "study"),
        "--variants",
        "bp",
        "ss_bp_pred:MODEL.FEEDBACK.RULE=sign_symmetry,MODEL.FEEDBACK.PREDICTOR.RULE=bp",
        "--seeds",
        "0",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.WARMUP_ITERS",
        "1",
        "SOLVER.STEPS",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.FPN.OUT_CHANNELS",
        "16",
        "MODEL.FEEDBACK.ALIGNMENT_PERIOD",
        "1",
        "TEST.EVAL_PERIOD",
        "1",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| bp | 1 |" in report and "| ss_bp_pred | 1 |" in report
    assert (tmp_path / "study" / "alignment.png").stat().st_size > 0
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert set(results) == {"bp", "ss_bp_pred"}
    assert len(results["bp"][0]["ap_curve"]) >= 1  # the final COCOEvaluator run
    assert results["bp"][0]["angles"]["weight_angle/backbone"][0][1] == pytest.approx(0, abs=1e-3)
    assert results["ss_bp_pred"][0]["angles"]["weight_angle/predictor"][0][1] == pytest.approx(
        0, abs=1e-3
    )

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0
    assert again.stdout.count("done, skipped") == 2
