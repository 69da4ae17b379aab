"""Test a finished study on a held-out set: each finished run's ``model_final.pth`` evaluated
once on the datasets registered from another root (``DETECTRON2_DATASETS=ROOT``, e.g. the
shapes set generated with another seed); the result is ``<run>/heldout.json``:
{"datasets_root", "shapes" (the set's generation params, if it is a shapes set), "results"
(train_net --eval-only's eval_results.json)}.

The val set a study reports on is also the set its settings (learning rates, schedules) were
chosen on, and a small one; a set that played no part in those choices says whether the
differences between rules hold on new images. Held-out AP / AP_bp uses the same matching as
the val gaps (:mod:`.gaps`: bp of the same schedule).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from ..checkpoint.io import atomic_write_text
from ..train_net import EVAL_RESULTS
from .gaps import gap_rows
from .records import HELDOUT
from .runs import TRAIN_NET

#: The weights a finished run is tested with, and where its held-out evaluation writes.
WEIGHTS, EVAL_DIR = "model_final.pth", "heldout"
MAKE_ONE = "python -m signsym_det.make_dataset --out ROOT/shapes --seed 1 --num-val 1000"


def _shapes_params(root: Path) -> dict:
    """Generation params of ROOT/shapes ({} if ROOT holds no shapes set)."""
    manifest = root / "shapes" / "manifest.json"
    return json.loads(manifest.read_text()).get("params", {}) if manifest.is_file() else {}


def describe_test_root(root, training_root=None) -> dict:
    """{"datasets_root": absolute path, "shapes": generation params of ROOT/shapes (or {})}.
    FileNotFoundError if ROOT is no directory; ValueError if it is the training root
    (``training_root``, default $DETECTRON2_DATASETS or ``datasets``) or its shapes set was
    made with the training set's seed (the same images)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--test-datasets {root}: no such directory; make a shapes set there with {MAKE_ONE}"
        )
    training = Path(training_root or os.environ.get("DETECTRON2_DATASETS", "datasets"))
    params, trained_on = _shapes_params(root), _shapes_params(training)
    if training.is_dir() and root.resolve() == training.resolve():
        raise ValueError(
            f"--test-datasets {root} is the training root (DETECTRON2_DATASETS): "
            f"nothing held out; make another set with {MAKE_ONE}"
        )
    if params and trained_on and params.get("seed") == trained_on.get("seed"):
        raise ValueError(
            f"--test-datasets {root}: its shapes set has seed {params.get('seed')}, the "
            f"training set's ({training}), so the same images; make one with another seed: "
            f"{MAKE_ONE}"
        )
    return {"datasets_root": str(root.resolve()), "shapes": params}


def _testable(run) -> bool:
    return run.done and not run.diverged and not (run.output_dir / HELDOUT).is_file()


def evaluate_heldout(runs, root, python=sys.executable, log=print, records=None) -> int:
    """Evaluate every finished, not diverged run of ``runs`` without a heldout.json yet on the
    sets under ``root`` (``train_net --eval-only`` with the run's own config.yaml); a run
    whose checkpoint is gone is reported and skipped, a failed evaluation stops. ``records``
    (:class:`.records.Records`) keeps each new heldout.json. Returns how many were tested."""
    description = describe_test_root(root)
    env = {**os.environ, "DETECTRON2_DATASETS": description["datasets_root"]}
    tested = 0
    for i, run in enumerate(runs, 1):
        if not _testable(run):
            continue
        tag = f"[held-out {i}/{len(runs)}] {run.variant} seed {run.seed}"
        weights, config = run.output_dir / WEIGHTS, run.output_dir / "config.yaml"
        if not (weights.is_file() and config.is_file()):
            log(f"{tag}: no {WEIGHTS} or config.yaml in {run.output_dir}: not tested")
            continue
        out = run.output_dir / EVAL_DIR
        out.mkdir(parents=True, exist_ok=True)
        cmd = [python, "-m", TRAIN_NET, "--config-file", str(config), "--eval-only"]
        cmd += ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out)]
        log(f"{tag}: evaluating on {description['datasets_root']}")
        with open(out / "stdout.log", "a") as stdout:
            code = subprocess.call(cmd, stdout=stdout, stderr=subprocess.STDOUT, env=env)
        if code != 0:
            raise RuntimeError(f"{tag}: evaluation failed (exit {code}); see {out / 'stdout.log'}")
        results = json.loads((out / EVAL_RESULTS).read_text())
        record = {**description, "results": results}
        atomic_write_text(json.dumps(record, indent=1), run.output_dir / HELDOUT)
        tested += 1
        if records:
            records.keep(run.output_dir)
    return tested


def read_heldout(output_dir):
    """A run's held-out {"set", "bbox": {metric: value}} (None if it was not tested): the
    bbox results of its single test set, or of the first if it had several."""
    path = Path(output_dir) / HELDOUT
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    results = record["results"]
    bbox = results.get("bbox") or next(iter(results.values()))["bbox"]
    return {"set": {k: record[k] for k in ("datasets_root", "shapes")}, "bbox": bbox}


def _tested(results):
    """``results`` (report.collect's) restricted to the runs with a held-out AP, twice: with
    "final" the val AP (as trained) and with "final" the held-out AP."""
    val, held = {}, {}
    for variant, seeds in results.items():
        tested = [s for s in seeds if s.get("heldout")]
        if tested:
            val[variant] = tested
            held[variant] = [{**s, "final": s["heldout"]} for s in tested]
    return val, held


def heldout_table(results, mean_std):
    """Markdown: per variant with tested runs: runs tested, held-out AP/AP50 and val AP of the
    same runs (mean ± std via ``mean_std``), AP / AP_bp on each; "" if no run was tested."""
    val, held = _tested(results)
    if not held:
        return ""
    ratios = {
        kind: {r["variant"]: r["ratio"] for r in gap_rows(view)}
        for kind, view in (("val", val), ("held", held))
    }
    head = ["variant", "runs tested", "held-out AP", "held-out AP50", "val AP (same runs)"]
    head += ["held-out AP / AP_bp", "val AP / AP_bp"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, seeds in held.items():
        cells = [variant, str(len(seeds))]
        cells += [mean_std([s["final"][m] for s in seeds]) for m in ("AP", "AP50")]
        cells.append(mean_std([s["final"]["AP"] for s in val[variant]]))
        for kind in ("held", "val"):
            ratio = ratios[kind].get(variant)
            cells.append("–" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    sets = sorted({_describe(s["heldout_set"]) for v in val.values() for s in v})
    return "\n".join([f"Held-out test set: {'; '.join(sets)}:", "", *lines])


def _describe(test_set) -> str:
    """ "ROOT (shapes seed S, N val images of P px)", or just ROOT if it is no shapes set."""
    params = test_set.get("shapes") or {}
    if not params:
        return test_set["datasets_root"]
    return (
        f"{test_set['datasets_root']} (shapes seed {params.get('seed')}, "
        f"{params.get('num_val')} val images of {params.get('image_size')} px)"
    )
