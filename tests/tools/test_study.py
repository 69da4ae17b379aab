"""tools/study.py: a 2-iteration study on a tiny set runs, reports, and resumes."""

import json

import pytest

from signsym_det.study import parse_variant, plan_runs, shard


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
    assert shard(runs, "0/2") == [runs[0], runs[2]] and shard(runs, "1/2") == [runs[1], runs[3]]
    assert shard(runs, "0/1") == runs
    for bad in ("2/2", "1", "a/2", "-1/2"):
        with pytest.raises(ValueError, match="K/N"):
            shard(runs, bad)


def test_tiny_study_runs_reports_and_resumes(tmp_path, tiny_shapes_env, tiny_run, run_tool):
    study = [
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
        "--",
        *tiny_run,
    ]
    run_tool(tiny_shapes_env, *study)
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

    again = run_tool(tiny_shapes_env, *study)
    assert again.count("done, skipped") == 2
