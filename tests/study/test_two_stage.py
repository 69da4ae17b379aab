"""The two-stage study (pretrain with the rule -> convert -> detect with the rule): planning,
shared pretraining runs, resume without redoing finished stages, divergence, the lock, the
relative gaps."""

import json
import os
import subprocess

import pytest

from signsym_det.study import collect, parse_variant, plan_runs, run_all
from signsym_det.study import pretraining as pretraining_module
from signsym_det.study.gaps import gap_rows, imagenet_ratio
from signsym_det.study.pretraining import Lock, pretraining_name, run_pretraining
from signsym_det.study.records import Records
from signsym_det.study.report import detection_progress, pretraining_table, table
from signsym_det.study.runs import call_logged

PRETRAIN = ["@configs/ImageNet/Shapes-R18.args", "--data", "cls"]


def test_parse_variant_keeps_parenthesised_commas_and_pretrain_flags():
    name, opts = parse_variant(
        "bp_long:MODEL.FEEDBACK.RULE=bp,SOLVER.STEPS=(4800,5550),PRETRAIN=--a --b 3"
    )
    assert name == "bp_long"
    assert opts == ["MODEL.FEEDBACK.RULE", "bp", "SOLVER.STEPS", "(4800,5550)"] + [
        "PRETRAIN",
        "--a --b 3",
    ]


def test_plan_shares_one_pretraining_per_rule_flags_and_seed(tmp_path):
    variants = [
        "bp",
        "bp_long:MODEL.FEEDBACK.RULE=bp,SOLVER.MAX_ITER=6",
        "fa",
        "fa_wn:MODEL.FEEDBACK.RULE=fa,PRETRAIN=--weight-norm-constraint",
        "ss_bp_bb:MODEL.FEEDBACK.RULE=sign_symmetry,MODEL.FEEDBACK.BACKBONE.RULE=bp",
    ]
    runs = plan_runs(tmp_path, variants, [0, 1], ["SOLVER.MAX_ITER", "2"], PRETRAIN)
    by = {(r.variant, r.seed): r for r in runs}
    assert by["bp", 0].pretraining == by["bp_long", 0].pretraining
    assert by["bp", 0].pretraining != by["bp", 1].pretraining
    assert by["fa", 1].pretraining != by["fa_wn", 1].pretraining
    assert by["ss_bp_bb", 0].pretraining == by["bp", 0].pretraining  # the backbone's rule
    stage = by["fa_wn", 1].pretraining
    assert stage.output_dir == tmp_path / "pretrain" / "fa+weight-norm-constraint" / "seed1"
    assert stage.args[: len(PRETRAIN)] == PRETRAIN
    tail = stage.args[len(PRETRAIN) :]
    assert tail == ["--rule", "fa", "--weight-norm-constraint", "--seed", "1"] + [
        "--output-dir",
        str(stage.output_dir),
    ]
    opts = by["fa_wn", 1].opts
    assert "PRETRAIN" not in opts
    assert opts[opts.index("MODEL.WEIGHTS") + 1] == str(stage.weights)
    assert opts[-2:] == ["SOLVER.MAX_ITER", "2"]  # the study's options still come last
    assert len({r.pretraining.output_dir for r in runs}) == 6  # bp, fa, fa+wn x 2 seeds


def test_a_variant_can_keep_to_some_seeds(tmp_path):
    variants = ["bp", "bp_long:MODEL.FEEDBACK.RULE=bp,SEEDS=0 2,SOLVER.MAX_ITER=6"]
    runs = plan_runs(tmp_path, variants, [0, 1, 2], (), PRETRAIN)
    assert [(r.variant, r.seed) for r in runs] == [
        ("bp", 0), ("bp_long", 0), ("bp", 1), ("bp", 2), ("bp_long", 2)
    ]  # fmt: skip
    assert "SEEDS" not in runs[1].opts and runs[1].pretraining == runs[0].pretraining
    assert [r.variant for r in plan_runs(tmp_path, variants, [1])] == ["bp"]
    with pytest.raises(ValueError, match=r"'bp_long': SEEDS='zero'; expected integers"):
        plan_runs(tmp_path, ["bp_long:MODEL.FEEDBACK.RULE=bp,SEEDS=zero"], [0])


def test_plan_refuses_what_it_cannot_pretrain(tmp_path):
    with pytest.raises(ValueError, match="MODEL.FEEDBACK.RULE"):
        plan_runs(tmp_path, ["x:MODEL.FEEDBACK.SEED=3"], [0], (), PRETRAIN)
    with pytest.raises(ValueError, match="pretrains nothing"):
        plan_runs(tmp_path, ["x:MODEL.FEEDBACK.RULE=fa,PRETRAIN=--x"], [0])
    with pytest.raises(ValueError, match="'pretrain'"):
        plan_runs(tmp_path, ["pretrain:MODEL.FEEDBACK.RULE=fa"], [0], (), PRETRAIN)
    assert pretraining_name("fa", ["--lr", "0.1"]) == "fa+lr+0.1"


def _fake_python(tmp_path, body):
    """An executable standing in for python: appends its arguments to calls.log, then runs
    ``body`` (sh; "$@" are the arguments)."""
    script = tmp_path / "fake_python"
    calls = tmp_path / "calls.log"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{body}\n')
    script.chmod(0o755)
    return str(script), calls


#: Plays pretrain_net (writes OUTPUT_DIR/model_final.pth) and train_net (nothing).
_PLAY = (
    'case "$*" in *pretrain_net*) out=$(echo "$@" | sed "s/.*--output-dir \\([^ ]*\\).*/\\1/");'
    ' echo pretrained > "$out/model_final.pth";; esac'
)


@pytest.fixture
def fake_convert(monkeypatch):
    """The conversion and the top-1 read replaced: the fake model_final.pth is no checkpoint."""
    converted = []

    def convert(src, dst):
        assert src.read_text().strip() == "pretrained"
        dst.write_text("converted")
        converted.append(dst)

    monkeypatch.setattr(pretraining_module, "convert_pretrained", convert)
    monkeypatch.setattr(pretraining_module, "top_k", lambda path: {"top1": 50.0, "top5": 90.0})
    return converted


def test_each_pretraining_runs_once_and_a_rerun_redoes_nothing(tmp_path, fake_convert):
    runs = plan_runs(tmp_path / "s", ["bp", "bp_x:MODEL.FEEDBACK.RULE=bp", "fa"], [0], (), PRETRAIN)
    python, calls = _fake_python(tmp_path, _PLAY)
    run_all(runs, "cfg.yaml", python=python, log=lambda m: None)
    lines = calls.read_text().splitlines()
    pretrain = [line for line in lines if "pretrain_net" in line]
    detect = [line for line in lines if "train_net" in line and "pretrain_net" not in line]
    assert len(pretrain) == 2 and "--rule bp" in pretrain[0] and "--rule fa" in pretrain[1]
    assert all(line.endswith("--resume") for line in pretrain)  # continues a checkpoint
    assert len(detect) == 3 and all(r.done for r in runs)
    assert f"MODEL.WEIGHTS {runs[0].pretraining.weights}" in detect[1]  # bp_x: bp's backbone
    assert fake_convert == [runs[0].pretraining.weights, runs[2].pretraining.weights]
    assert runs[0].pretraining.info["top1"] == 50.0
    assert not (runs[0].pretraining.output_dir / ".lock").exists()

    # an interrupted detection run: the rerun resumes it and pretrains nothing
    (runs[2].output_dir / "done.json").unlink()
    (runs[2].output_dir / "last_checkpoint").write_text("model_0000001.pth")
    calls.unlink()
    run_all(runs, "cfg.yaml", python=python, log=lambda m: None)
    (line,) = calls.read_text().splitlines()
    assert "train_net" in line and "--resume" in line and "fa/seed0" in line


def test_a_failed_pretraining_stops_the_study_and_is_retried(tmp_path, fake_convert):
    runs = plan_runs(tmp_path / "s", ["fa"], [0], (), PRETRAIN)
    python, calls = _fake_python(tmp_path, "echo 'Killed'; exit 137")
    with pytest.raises(RuntimeError, match="pretraining fa seed 0 failed"):
        run_all(runs, "cfg.yaml", python=python, log=lambda m: None)
    assert not runs[0].pretraining.done and not runs[0].done
    python, calls = _fake_python(tmp_path, _PLAY)
    run_all(runs, "cfg.yaml", python=python, log=lambda m: None)
    assert runs[0].pretraining.done and runs[0].done


def test_a_diverged_pretraining_marks_its_runs_diverged(tmp_path, fake_convert):
    runs = plan_runs(tmp_path / "s", ["fa", "fa2:MODEL.FEEDBACK.RULE=fa"], [0], (), PRETRAIN)
    line = "FloatingPointError: Loss became infinite or NaN at iteration=7!"
    python, calls = _fake_python(tmp_path, f"echo '{line}'; exit 1")
    run_all(runs, "cfg.yaml", python=python, log=lambda m: None)
    assert [r.diverged for r in runs] == [f"pretraining diverged: {line}"] * 2
    assert len(calls.read_text().splitlines()) == 1  # one pretraining, no detection
    assert not runs[0].pretraining.weights.exists() and fake_convert == []


def test_records_resume_a_study_on_a_machine_that_has_only_them(tmp_path, fake_convert):
    """Machine 1 finishes bp and its pretraining, keeping records; machine 2 starts from the
    records alone: bp is restored (not rerun, its metrics readable), fa trains, and fa's
    pretraining, recorded but without weights there, is trained again for it."""
    records_dir = tmp_path / "records"
    first = plan_runs(tmp_path / "m1", ["bp", "fa"], [0], (), PRETRAIN)
    python, calls = _fake_python(tmp_path, _PLAY)
    run_all(first[:1], "cfg.yaml", python=python, log=lambda m: None)
    record = {"iteration": 9, "bbox/AP": 3.0, "bbox/AP50": 6.0, "bbox/AP75": 1.0}
    (first[0].output_dir / "metrics.json").write_text(json.dumps(record) + "\n")
    (first[0].output_dir / "model_final.pth").write_text("big")
    records = Records(tmp_path / "m1", records_dir)
    for stage in (first[0].output_dir, first[0].pretraining.output_dir):
        records.keep(stage)
    # fa's pretraining finished on machine 1 too; its detection run did not
    run_pretraining(first[1].pretraining, python, call_logged, log=lambda m: None)
    records.keep(first[1].pretraining.output_dir)
    assert not (records_dir / "bp" / "seed0" / "model_final.pth").exists()

    second = plan_runs(tmp_path / "m2", ["bp", "fa"], [0], (), PRETRAIN)
    records = Records(tmp_path / "m2", records_dir)
    assert len(records.restore()) == 3 and second[0].done and not second[1].done
    assert collect(second)["bp"][0]["final"]["AP"] == 3.0
    assert records.restore() == []  # nothing overwritten
    calls.unlink()
    run_all(second, "cfg.yaml", python=python, log=lambda m: None, records=records)
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and "--rule fa" in lines[0] and "fa/seed0" in lines[1]
    assert second[1].pretraining.weights.is_file() and second[1].done
    assert (records_dir / "fa" / "seed0" / "done.json").is_file()  # kept as it finished


def test_a_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{os.uname().nodename}:{dead.pid}")
    with Lock(tmp_path, poll=0.01, log=lambda m: None) as lock:
        assert (tmp_path / ".lock").read_text() == lock.owner
    assert not (tmp_path / ".lock").exists()


def _results(aps, rule, iteration, top1=None):
    return [
        {
            "seed": seed,
            "rule": rule,
            "minutes": 1.0,
            "diverged": None,
            "final": {"AP": ap, "AP50": 2 * ap, "AP75": ap / 2},
            "ap_curve": [(iteration, ap)],
            "angles": {},
            "pretraining": None if top1 is None else {"name": rule, "top1": top1},
        }
        for seed, ap in enumerate(aps)
    ]


def test_relative_gaps_compare_with_bp_of_the_same_schedule_and_biotorch():
    results = {
        "bp": _results([20.0, 30.0], "bp", 2000, top1=90.0),
        "sign_symmetry": _results([10.0, 20.0], "sign_symmetry", 2000, top1=70.0),
        "bp_long": _results([40.0], "bp", 6000),
        "ss_long": _results([30.0], "sign_symmetry", 6000),
        "kolen_pollack": _results([5.0], "kolen_pollack", 2000),
    }
    reference = {"bp": _results([26.0], None, 2000), "sign_symmetry": _results([13.0], None, 2000)}
    rows = {r["variant"]: r for r in gap_rows(results, reference)}
    assert rows["sign_symmetry"]["ratio"] == pytest.approx(15 / 25)
    assert rows["ss_long"]["ratio"] == pytest.approx(30 / 40)
    assert rows["sign_symmetry"]["scratch_ratio"] == pytest.approx(0.5)
    assert rows["ss_long"]["scratch_ap"] is None  # no from-scratch run at 6000
    assert rows["sign_symmetry"]["imagenet_ratio"] == pytest.approx(65.03 / 69.61)
    assert imagenet_ratio("fa") == pytest.approx(14.75 / 69.61)
    assert rows["kolen_pollack"]["imagenet_ratio"] is None
    header, _, first = table(results).splitlines()[:3]
    assert "pretrain top-1 %" in header
    assert first.startswith("| bp | 2 | 0 | 90.0 ± 0.0 | 25.0 ± 7.1 |")


def test_collect_reads_the_pretraining_of_each_run(tmp_path, fake_convert):
    (run,) = plan_runs(tmp_path / "s", ["fa"], [0], (), PRETRAIN)
    python, _ = _fake_python(tmp_path, _PLAY)
    run_all([run], "cfg.yaml", python=python, log=lambda m: None)
    record = {"iteration": 9, "bbox/AP": 3.0, "bbox/AP50": 6.0, "bbox/AP75": 1.0}
    (run.output_dir / "metrics.json").write_text(json.dumps(record) + "\n")
    angles = [{"iteration": i, "weight_angle/layer1": 80.0 - i} for i in (0, 10)]
    (run.pretraining.output_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(a) + "\n" for a in angles)
    )
    (entry,) = collect([run])["fa"]
    assert entry["rule"] == "fa" and entry["final"]["AP"] == 3.0
    assert entry["pretraining"]["top1"] == 50.0 and entry["pretraining"]["name"] == "fa"
    assert entry["pretraining"]["angles"] == {"weight_angle/layer1": [(0, 80.0), (10, 70.0)]}
    assert pretraining_table([run]).splitlines()[2].startswith("| fa | [0] | 0 | 50.0 | 90.0 |")
    (other,) = plan_runs(tmp_path / "s2", ["fa"], [0], (), PRETRAIN)
    assert detection_progress(other) == "fa/seed0"
    other.output_dir.mkdir(parents=True)
    records = [{"iteration": 499, "bbox/AP": 4.25}, {"iteration": 519, "total_loss": 1.0}]
    (other.output_dir / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert detection_progress(other) == "fa/seed0 (at iteration 520, AP 4.2 at 500)"
    assert pretraining_table([other]) == ""
    other.pretraining.output_dir.mkdir(parents=True)
    record = {"iteration": 124, "train_top1": 28.1}
    (other.pretraining.output_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    assert "Under way: fa seed 0: at iteration 125 (train top-1 28 %)." in pretraining_table(
        [other]
    )


_TINY_DETECTION = (
    "SOLVER.MAX_ITER 3 SOLVER.IMS_PER_BATCH 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS () "
    "DATALOADER.NUM_WORKERS 0 MODEL.FPN.OUT_CHANNELS 16 MODEL.FEEDBACK.ALIGNMENT_PERIOD 1"
).split()
_TINY_PRETRAINING = (
    "--arch resnet18 --image-size 32 --batch-size 4 --max-iter 2 --workers 0 --device cpu "
    "--optimizer adamw --lr 0.001 --log-period 1 --alignment-period 1 --eval-period 0 "
    "--no-tensorboard"
)


@pytest.mark.slow
def test_tiny_two_stage_study_runs_both_stages_and_resumes(tmp_path):
    from repo_process import run_python

    from signsym_det.data.classification import generate_classification_dataset
    from signsym_det.data.shapes import generate_detection_dataset

    generate_detection_dataset(tmp_path / "datasets" / "shapes", num_train=4, num_val=3)
    generate_classification_dataset(tmp_path / "cls", num_train=12, num_val=6, image_size=32)
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    out = tmp_path / "study"
    study = ["-m", "signsym_det.study", "--config-file"]
    study += ["configs/Shapes-Demo/Base-Shapes-RetinaNet-R18.yaml", "--out", str(out)]
    study += ["--variants", "bp", "fa", "--seeds", "0"]
    study += ["--pretrain-args", f"{_TINY_PRETRAINING} --data {tmp_path / 'cls'}"]

    def run(*extra):  # extra: options that override the study's (argparse: the last wins)
        proc = run_python(env, *study, *extra, "--", *_TINY_DETECTION, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    first = run()
    assert "pretraining bp seed 0" in first and "pretraining fa seed 0" in first
    bp_stage, fa_stage = (out / "pretrain" / rule / "seed0" for rule in ("bp", "fa"))
    assert "backbone 60/60 weights" in (out / "fa" / "seed0" / "log.txt").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["fa"][0]["pretraining"]["top1"] is not None
    assert results["fa"][0]["pretraining"]["angles"]["weight_angle/layer1"]
    assert (out / "pretraining_alignment.png").stat().st_size > 0

    # interrupted: fa's detection (checkpoint, no done.json) and fa's pretraining (its
    # checkpoint.pth, not converted yet); bp's stages are finished and must stay untouched
    bp_final = (bp_stage / "model_final.pth").stat().st_mtime_ns
    (out / "fa" / "seed0" / "done.json").unlink()
    (fa_stage / "done.json").unlink()
    (fa_stage / "backbone_d2.pth").unlink()
    again = run()
    assert "bp seed 0: done, skipped" in again and "pretraining bp" not in again
    assert "pretraining fa seed 0" in again and "fa seed 0: resuming" in again
    assert (bp_stage / "model_final.pth").stat().st_mtime_ns == bp_final
    assert (fa_stage / "backbone_d2.pth").is_file() and "IN PROGRESS" not in (
        out / "report.md"
    ).read_text()

    # records added to the finished study; another machine with only them: the report has
    # both runs, nothing is trained
    records = ["--records", str(tmp_path / "records")]
    assert "0 finished stages restored" in run(*records, "--report-only")
    other = tmp_path / "other"
    report = run(*records, "--out", str(other))
    assert "4 finished stages restored" in report  # two pretraining, two detection stages
    assert report.count("done, skipped") == 2 and "pretraining" not in report
    assert "IN PROGRESS" not in (other / "report.md").read_text()
    assert sorted(json.loads((other / "results.json").read_text())) == ["bp", "fa"]
