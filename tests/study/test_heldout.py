"""study --test-datasets: which runs are tested, on which root, and the held-out table."""

import json

import pytest

from signsym_det.study import collect, plan_runs
from signsym_det.study.cli import main as study_main
from signsym_det.study.heldout import (
    HELDOUT,
    describe_test_root,
    evaluate_heldout,
    heldout_table,
)
from signsym_det.study.records import Records
from signsym_det.study.report import _mean_std


def _finished(run, ap, diverged=None, weights=True):
    """A finished run as the runner leaves it: done.json, metrics.json, config and weights."""
    run.output_dir.mkdir(parents=True, exist_ok=True)
    record = {"iteration": 1999, "bbox/AP": ap, "bbox/AP50": 2 * ap, "bbox/AP75": ap / 2}
    (run.output_dir / "metrics.json").write_text(json.dumps(record) + "\n")
    (run.output_dir / "done.json").write_text(json.dumps({"seconds": 60.0, "diverged": diverged}))
    (run.output_dir / "config.yaml").write_text("MODEL: {}\n")
    if weights:
        (run.output_dir / "model_final.pth").write_text("weights")


#: Plays train_net --eval-only: logs its arguments and $DETECTRON2_DATASETS, writes the
#: eval_results.json of OUTPUT_DIR with AP 12.5 (AP50 25, AP75 NaN: JSON null).
_EVAL = (
    'echo "$DETECTRON2_DATASETS $*" >> {calls}\n'
    'out=$(echo "$@" | sed "s/.*OUTPUT_DIR \\([^ ]*\\).*/\\1/")\n'
    'echo \'{{"bbox": {{"AP": 12.5, "AP50": 25.0, "AP75": null}}}}\' > "$out/eval_results.json"'
)


@pytest.fixture
def fake_eval(tmp_path):
    calls = tmp_path / "calls.log"
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\n" + _EVAL.format(calls=calls) + "\n")
    script.chmod(0o755)
    return str(script), calls


def _shapes_root(root, seed):
    (root / "shapes").mkdir(parents=True)
    (root / "shapes" / "manifest.json").write_text(json.dumps({"params": {"seed": seed}}))
    return root


def test_only_finished_runs_with_weights_are_tested_once(tmp_path, fake_eval, monkeypatch):
    python, calls = fake_eval
    monkeypatch.setenv("DETECTRON2_DATASETS", str(_shapes_root(tmp_path / "train", 0)))
    root = _shapes_root(tmp_path / "heldout", 7)
    study = tmp_path / "study"
    bp, fa, kp, ss = plan_runs(study, ["bp", "fa", "kolen_pollack", "sign_symmetry"], [0])
    _finished(bp, 40.0)
    _finished(fa, 1.0, diverged="FloatingPointError: at iteration=5")
    _finished(kp, 20.0, weights=False)  # its checkpoints were not kept
    # ss: not finished
    records = Records(study, tmp_path / "records")
    messages = []
    tested = evaluate_heldout([bp, fa, kp, ss], root, python, messages.append, records)

    (line,) = calls.read_text().splitlines()
    assert tested == 1
    assert line.startswith(f"{root.resolve()} -m signsym_det.train_net --config-file ")
    assert f"--eval-only MODEL.WEIGHTS {bp.output_dir / 'model_final.pth'}" in line
    assert any("kolen_pollack seed 0: no model_final.pth" in m for m in messages)
    record = json.loads((bp.output_dir / HELDOUT).read_text())
    assert record["datasets_root"] == str(root.resolve()) and record["shapes"] == {"seed": 7}
    assert record["results"]["bbox"]["AP"] == 12.5
    kept = tmp_path / "records" / "bp" / "seed0" / HELDOUT
    assert json.loads(kept.read_text()) == record  # the records keep it for another machine

    results = collect([bp, fa, kp])
    assert results["bp"][0]["heldout"] == {"AP": 12.5, "AP50": 25.0, "AP75": 0.0}
    assert "heldout" not in results["fa"][0] and "heldout" not in results["kolen_pollack"][0]

    calls.unlink()
    assert evaluate_heldout([bp, fa, kp, ss], root, python, messages.append) == 0
    assert not calls.exists()  # tested once


def test_a_missing_root_fails_before_anything_runs(tmp_path):
    missing = tmp_path / "no_such_root"
    argv = ["--config-file", "cfg.yaml", "--out", str(tmp_path / "study"), "--variants", "bp"]
    with pytest.raises(FileNotFoundError, match=f"--test-datasets {missing}: no such directory"):
        study_main([*argv, "--test-datasets", str(missing)])
    assert not (tmp_path / "study").exists()


def test_the_training_set_is_no_held_out_set(tmp_path):
    train = _shapes_root(tmp_path / "train", 0)
    with pytest.raises(ValueError, match="is the training root"):
        describe_test_root(train, training_root=train)
    same_seed = _shapes_root(tmp_path / "copy", 0)
    with pytest.raises(ValueError, match="seed 0, the training set's"):
        describe_test_root(same_seed, training_root=train)
    other = _shapes_root(tmp_path / "other", 1)
    assert describe_test_root(other, training_root=train)["shapes"] == {"seed": 1}


def _seed(rule, val_ap, held_ap=None):
    seed = {"rule": rule, "final": {"AP": val_ap}, "ap_curve": [(1999, val_ap)]}
    if held_ap is not None:
        seed["heldout"] = {"AP": held_ap, "AP50": 2 * held_ap, "AP75": 0.0}
        seed["heldout_set"] = {"datasets_root": "/h", "shapes": {"seed": 1, "num_val": 9}}
    return seed


def test_heldout_table_compares_the_same_runs_on_both_sets():
    results = {
        "bp": [_seed("bp", 60.0, 40.0), _seed("bp", 60.0, 44.0)],
        # the untested seed (val AP 90) must not enter the val column
        "sign_symmetry": [_seed("sign_symmetry", 15.0, 21.0), _seed("sign_symmetry", 90.0)],
        "fa": [_seed("fa", 5.0)],  # no run tested: no row
    }
    lines = heldout_table(results, _mean_std).splitlines()
    assert lines[0].startswith("Held-out test set: /h (shapes seed 1, 9 val images")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[4:]}
    assert set(rows) == {"bp", "sign_symmetry"}
    # held-out: 21 / mean(40, 44) = 0.50; val, same runs: 15 / 60 = 0.25
    assert rows["sign_symmetry"] == "| sign_symmetry | 1 | 21.0 | 42.0 | 15.0 | 0.50 | 0.25 |"
    assert rows["bp"].startswith("| bp | 2 | 42.0 ± 2.8 | 84.0 ± 5.7 | 60.0 ± 0.0 | 1.00 |")
    assert heldout_table({"fa": [_seed("fa", 5.0)]}, _mean_std) == ""
