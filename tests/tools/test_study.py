"""tools/study.py: a 2-iteration study on a tiny set runs, reports, and resumes."""

import json

import pytest

from signsym_det.data.shapes import generate_detection_dataset
from signsym_det.study import collect, parse_variant, plan_runs, run_all, shard
from signsym_det.study.report import table
from signsym_det.study.runs import _call_timed


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


@pytest.mark.slow
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

    # tested on a held-out set (another seed, 5 val images): once, from the finished runs
    heldout = tmp_path / "heldout"
    generate_detection_dataset(heldout / "shapes", seed=1, num_train=1, num_val=5)
    at = study.index("--")
    again = run_tool(tiny_shapes_env, *study[:at], "--test-datasets", str(heldout), *study[at:])
    assert again.count("done, skipped") == 2 and again.count("evaluating on") == 2
    for name in ("bp", "ss_bp_pred"):
        log = (tmp_path / "study" / name / "seed0" / "heldout" / "log.txt").read_text()
        assert f"Loaded 5 images in COCO format from {heldout.resolve()}" in log
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert results["bp"][0]["heldout_set"]["shapes"]["seed"] == 1
    assert "Held-out test set:" in (tmp_path / "study" / "report.md").read_text()


def _fake_python(tmp_path, body):
    """An executable standing in for python: runs ``body`` (sh) whatever the arguments."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_diverged_run_is_recorded_and_the_study_goes_on(tmp_path):
    runs = plan_runs(tmp_path / "study", ["fa", "bp"], [0])
    line = "FloatingPointError: Loss became infinite or NaN at iteration=41!"
    python = _fake_python(tmp_path, f"echo 'Traceback'; echo '{line}'; exit 1")
    messages = []
    run_all(runs, "cfg.yaml", python=python, log=messages.append)
    assert [r.diverged for r in runs] == [line, line] and all(r.done for r in runs)
    assert any("DIVERGED" in m for m in messages)
    results = collect(runs)
    assert results["fa"][0]["final"] is None and results["fa"][0]["diverged"] == line
    report = table(results)
    assert "| fa | 1 | 1 | – | – | – |" in report and f"fa seed 0: {line}" in report


def test_a_crash_stops_the_study(tmp_path):
    runs = plan_runs(tmp_path / "study", ["fa", "bp"], [0])
    python = _fake_python(tmp_path, "echo 'ValueError: bad config'; exit 1")
    with pytest.raises(RuntimeError, match="fa seed 0 failed"):
        run_all(runs, "cfg.yaml", python=python, log=lambda message: None)
    assert not runs[0].done and not runs[1].done


def test_report_averages_converged_runs_only(tmp_path):
    runs = plan_runs(tmp_path / "study", ["fa"], [0, 1])
    for run, ap in zip(runs, (10.0, None)):
        run.output_dir.mkdir(parents=True)
        record = {"iteration": 99, "bbox/AP": float("nan"), "bbox/AP50": 2.0, "bbox/AP75": 0.5}
        if ap is not None:
            record.update({"bbox/AP": ap, "bbox/AP50": 20.0, "bbox/AP75": 5.0})
        (run.output_dir / "metrics.json").write_text(json.dumps(record) + "\n")
        diverged = None if ap is not None else "FloatingPointError: at iteration=60"
        done = {"seconds": 120.0, "diverged": diverged}
        (run.output_dir / "done.json").write_text(json.dumps(done))
    results = collect(runs)
    assert results["fa"][1]["ap_curve"] == [(99, 0.0)]  # NaN: no detections at all
    row = table(results).splitlines()[2]
    assert row.startswith("| fa | 2 | 1 | 10.0 | 20.0 | 5.0 |") and row.endswith("| 2 |")


def test_a_resumed_run_counts_the_time_of_every_invocation(tmp_path):
    (run,) = plan_runs(tmp_path / "study", ["fa"], [0])
    run.output_dir.mkdir(parents=True)
    (run.output_dir / "last_checkpoint").write_text("model_0000499.pth")  # interrupted once
    (run.output_dir / "elapsed.json").write_text(json.dumps({"seconds": 100.0}))
    run_all([run], "cfg.yaml", python=_fake_python(tmp_path, "sleep 0.3"), log=print)
    seconds = json.loads((run.output_dir / "done.json").read_text())["seconds"]
    assert 100.3 <= seconds < 130


def test_elapsed_time_is_on_disk_while_the_run_trains(tmp_path):
    """Written every heartbeat, so that a run killed mid-way keeps the time it had spent."""
    seen = tmp_path / "seen.json"
    body = f"sleep 0.5; cat {tmp_path / 'elapsed.json'} > {seen}"
    with open(tmp_path / "out.log", "w") as out:
        code, seconds = _call_timed([_fake_python(tmp_path, body)], out, tmp_path, heartbeat=0.1)
    assert code == 0 and 0.5 <= seconds < 30
    assert 0.2 <= json.loads(seen.read_text())["seconds"] <= seconds
    assert json.loads((tmp_path / "elapsed.json").read_text())["seconds"] == seconds
