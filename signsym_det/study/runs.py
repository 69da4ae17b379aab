"""Plan and run the jobs of a study; a finished run (``done.json`` present) is never rerun.

A run that diverges (detectron2 stops it with a FloatingPointError: loss infinite or NaN) is a
result, not a crash: ``done.json`` records ``"diverged"`` with the error line and the study
goes on. Any other failure stops the study.

Each run is ``python -m signsym_det.train_net --config-file BASE OUTPUT_DIR
<study>/<variant>/seed<k> SEED k MODEL.FEEDBACK.SEED k <variant opts>``: on a cluster, each can
be its own job. In a two-stage study (``pretrain_args`` given) a run first makes sure its
pretraining stage is done (:mod:`.pretraining`) and loads the backbone through
``MODEL.WEIGHTS``; a diverged pretraining makes its detection runs "diverged" too.

A run's time (``done.json`` ``"seconds"``) sums all its invocations: while it trains, the
runner rewrites ``elapsed.json`` every minute, so a killed and resumed run loses at most a
minute of its count.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..checkpoint.io import atomic_write_text
from ..feedback import get_rule
from .pretraining import (
    Pretraining,
    backbone_rule,
    plan_pretraining,
    pop_pretrain_flags,
    run_pretraining,
)
from .records import DONE

#: The training job, run as ``python -m TRAIN_NET`` (the installed package's, not a script).
TRAIN_NET = "signsym_det.train_net"
ELAPSED = "elapsed.json"
HEARTBEAT_SECONDS = 60.0


@dataclass
class Run:
    variant: str
    seed: int
    output_dir: Path
    opts: list = field(default_factory=list)
    pretraining: Optional[Pretraining] = None

    @property
    def done(self) -> bool:
        return (self.output_dir / DONE).is_file()

    @property
    def diverged(self) -> Optional[str]:
        """The error line of a run stopped by a non-finite loss, else None."""
        if not self.done:
            return None
        return json.loads((self.output_dir / DONE).read_text()).get("diverged")


def _elapsed_before(output_dir: Path) -> float:
    """Seconds spent on a run by earlier (interrupted) invocations."""
    try:
        return float(json.loads((output_dir / ELAPSED).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _call_timed(cmd, stdout, output_dir: Path, heartbeat=HEARTBEAT_SECONDS):
    """Run ``cmd``, keeping ``elapsed.json`` = earlier invocations' seconds + this one's so far;
    returns (exit code, total seconds)."""
    before, start = _elapsed_before(output_dir), time.time()

    def record():
        seconds = before + time.time() - start
        atomic_write_text(json.dumps({"seconds": seconds}), output_dir / ELAPSED)
        return seconds

    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, env=os.environ)
    while True:
        try:
            code = proc.wait(timeout=heartbeat)
            return code, record()
        except subprocess.TimeoutExpired:
            record()
        except BaseException:  # Ctrl-C or the runner killed: stop the training job too
            proc.kill()
            proc.wait()
            record()
            raise


def divergence(log_file: Path) -> Optional[str]:
    """The FloatingPointError line of a training log, if the run stopped on one."""
    if not log_file.is_file():
        return None
    lines = log_file.read_text(errors="replace").splitlines()
    return next((line for line in reversed(lines) if "FloatingPointError:" in line), None)


def _split_items(spec: str) -> list:
    """``spec`` split at the commas outside parentheses: ``A=1,B=(2,3)`` -> [A=1, B=(2,3)]."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(spec):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    return [*items, spec[start:]]


def parse_variant(text):
    """``NAME`` (a rule name) or ``NAME:KEY=VALUE,KEY=VALUE`` -> (name, [KEY, VALUE, ...]).

    ``sign_symmetry`` -> MODEL.FEEDBACK.RULE sign_symmetry;
    ``ss_bp_pred:MODEL.FEEDBACK.RULE=sign_symmetry,MODEL.FEEDBACK.PREDICTOR.RULE=bp``;
    commas inside parentheses stay in the value (``SOLVER.STEPS=(4800,5550)``); a two-stage
    study reads ``PRETRAIN=--flag --flag`` as extra pretraining flags; ``SEEDS=0 1`` runs the
    variant with only those of the study's seeds (:func:`pop_seeds`).
    """
    name, _, spec = text.partition(":")
    if not spec:
        get_rule(name)  # ValueError naming the valid rules
        return name, ["MODEL.FEEDBACK.RULE", name]
    opts = []
    for item in _split_items(spec):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
        opts += [key, value]
    return name, opts


def plan_runs(study_dir, variants, seeds, extra_opts=(), pretrain_args=None):
    """All (variant, seed) runs of a study, in the order they are run (seed-major).

    ``pretrain_args`` (pretrain_net options; None: no pretraining stage) makes each run start
    from a backbone pretrained with its backbone rule and seed (module docstring)."""
    parsed = [parse_variant(v) for v in variants]
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    if pretrain_args is not None and "pretrain" in names:
        raise ValueError("variant name 'pretrain' is taken by the pretraining runs' directory")
    runs = []
    parsed = [(name, *pop_seeds(name, opts)) for name, opts in parsed]
    for seed in seeds:
        for name, opts, only in parsed:
            if only is not None and seed not in only:
                continue
            opts, flags = pop_pretrain_flags(opts)
            if flags and pretrain_args is None:
                raise ValueError(
                    f"variant {name!r} has PRETRAIN flags but the study pretrains nothing"
                )
            stage = None
            if pretrain_args is not None:
                rule = backbone_rule(opts)
                stage = plan_pretraining(study_dir, rule, flags, seed, pretrain_args)
                opts = [*opts, "MODEL.WEIGHTS", str(stage.weights)]
            seeded = ["SEED", str(seed), "MODEL.FEEDBACK.SEED", str(seed)]
            output_dir = Path(study_dir) / name / f"seed{seed}"
            runs.append(Run(name, seed, output_dir, [*opts, *seeded, *extra_opts], stage))
    return runs


#: Variant key restricting it to some seeds: ``long:SOLVER.MAX_ITER=6000,SEEDS=0``.
SEEDS_KEY = "SEEDS"


def pop_seeds(name, opts) -> tuple:
    """(opts without the ``SEEDS`` entry, the seeds it names or None: all the study's).

    A seed the study does not run is no error: ``--seeds 1`` plans no run of a ``SEEDS=0``
    variant, so a study run one seed at a time keeps the variant to seed 0."""
    kept, only = [], None
    for key, value in zip(opts[::2], opts[1::2]):
        if key != SEEDS_KEY:
            kept += [key, value]
            continue
        try:
            only = {int(seed) for seed in value.split()}
        except ValueError:
            only = set()
        if not only:
            raise ValueError(
                f"variant {name!r}: SEEDS={value!r}; expected integers separated by spaces, "
                "e.g. SEEDS=0 or SEEDS=0 1"
            ) from None
    return kept, only


def shard(runs, spec: str):
    """The runs of shard ``"K/N"`` (K in 0..N-1): every N-th run from the K-th, so that N
    processes (one per core or per GPU job) share a study without running a run twice."""
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"shard {spec!r}: expected K/N with 0 <= K < N, e.g. 0/2")
    return runs[int(index) :: int(count)]


def call_logged(cmd, log_file: Path, output_dir: Path):
    """Run ``cmd`` timed (:func:`_call_timed`), its output appended to ``log_file``; returns
    (exit code, seconds, the FloatingPointError line if it failed on one)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as out:
        code, seconds = _call_timed(cmd, out, output_dir)
    return code, seconds, divergence(log_file) if code != 0 else None


def run_all(runs, config_file, python=sys.executable, log=print, records=None):
    """Run the unfinished runs one after another (each after its pretraining stage, if any);
    a failed run stops the study. ``records`` (:class:`.records.Records`): each stage that
    finishes is also kept there."""
    for i, run in enumerate(runs, 1):
        if run.done:
            log(f"[{i}/{len(runs)}] {run.variant} seed {run.seed}: done, skipped")
            continue
        cmd = [python, "-m", TRAIN_NET, "--config-file", str(config_file)]
        stage = run.pretraining
        pretrain_diverged = stage and run_pretraining(stage, python, call_logged, log=log)
        if stage and records:
            records.keep(stage.output_dir)
        if pretrain_diverged:
            seconds, diverged = 0.0, f"pretraining diverged: {pretrain_diverged}"
        else:
            resume = (run.output_dir / "last_checkpoint").is_file()
            cmd += ["--resume"] if resume else []
            cmd += ["OUTPUT_DIR", str(run.output_dir), *run.opts]
            action = "resuming" if resume else "training"
            log(f"[{i}/{len(runs)}] {run.variant} seed {run.seed}: {action}")
            stdout = run.output_dir / "study_stdout.log"
            code, seconds, diverged = call_logged(cmd, stdout, run.output_dir)
            if code != 0 and diverged is None:
                raise RuntimeError(
                    f"{run.variant} seed {run.seed} failed (exit {code}); see {stdout}"
                )
        run.output_dir.mkdir(parents=True, exist_ok=True)
        if diverged:
            log(f"[{i}/{len(runs)}] {run.variant} seed {run.seed}: DIVERGED: {diverged}")
        info = {
            "variant": run.variant,
            "seed": run.seed,
            "seconds": seconds,
            "command": cmd,
            "diverged": diverged,
        }
        (run.output_dir / DONE).write_text(json.dumps(info, indent=1))
        if records:
            records.keep(run.output_dir)
