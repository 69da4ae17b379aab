"""The Bartunov et al. study at laptop scale: an LR sweep on the easy task, then the ladder.

Runs (one JSON each under ``OUT/runs/``; a finished run is skipped, so the study resumes):

* sweep: every algorithm, conv, seed 0, on :data:`SWEEP_TASK`, each of :data:`SWEEP_LRS`,
  scored on the task's ``val`` split;
* ladder: every task x :data:`LADDER_ALGORITHMS` x arch x seed at the algorithm's chosen lr
  (its best sweep val top-1; ties: the smaller lr), scored on ``test``, seed by seed. The
  chosen values are written to ``OUT/chosen_lrs.json`` once every sweep run is done (a shard
  waits for the other shards' sweep runs).

Shard ``i/n`` takes every n-th run of each stage. The conv runs of
:data:`DETECTION_ALGORITHMS` on :data:`CHECKPOINT_TASK` with seed 0 (run first) also save
their weights (``OUT/checkpoints/{run}.pth``, the layered layout of ``pretrain_net``) for the
detection runs.
"""

from __future__ import annotations

import json
import os
import time

import torch

from ..checkpoint import atomic_save
from .run import RunConfig, train
from .tasks import TASKS, load_task

ALGORITHMS = ("bp", "fa", "sign_symmetry", "dfa", "dtp", "sdtp", "ao_sdtp")
#: The ladder's algorithms: AO-SDTP is swept but left out of the ladder (on the easy task it
#: trains no better than SDTP, at DTP's cost; the CPU budget goes to the 3 seeds instead).
LADDER_ALGORITHMS = ("bp", "fa", "sign_symmetry", "dfa", "dtp", "sdtp")
#: The algorithms whose conv / CHECKPOINT_TASK / seed-0 weights the detection runs start from.
DETECTION_ALGORITHMS = ("bp", "dtp")
ARCHS = ("conv", "lc")
SEEDS = (0, 1, 2)
SWEEP_TASK = "mnist"
SWEEP_LRS = (3e-4, 1e-3, 3e-3)
CHECKPOINT_TASK = "cluttered"
SIZES = {"train": 3000, "test": 1000}
SWEEP_SIZES = {"train": 3000, "val": 1000, "test": 1000}


def parse_shard(text: str) -> tuple:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def sweep_runs(**common) -> list:
    return [
        RunConfig(SWEEP_TASK, algorithm, "conv", 0, lr, **common)
        for algorithm in ALGORITHMS
        for lr in SWEEP_LRS
    ]


def ladder_runs(chosen: dict, **common) -> list:
    """The ladder seed by seed (a study cut short has whole seeds), the detection backbones'
    runs first."""
    runs = [
        RunConfig(task, algorithm, arch, seed, chosen[algorithm], **common)
        for seed in SEEDS
        for task in TASKS
        for arch in ARCHS
        for algorithm in LADDER_ALGORITHMS
        if algorithm in chosen
    ]
    return sorted(runs, key=lambda run: not saves_checkpoint(run))


def saves_checkpoint(run: RunConfig) -> bool:
    """Whether the run is a detection run's backbone (its weights are saved)."""
    return (
        run.task == CHECKPOINT_TASK
        and run.arch == "conv"
        and run.seed == 0
        and run.algorithm in DETECTION_ALGORITHMS
    )


def record_path(out: str, run: RunConfig, stage: str = "ladder") -> str:
    """``OUT/runs/{run}.json`` for the ladder, ``OUT/runs/sweep/{run}.json`` for the sweep."""
    return os.path.join(out, "runs", *(["sweep"] if stage == "sweep" else []), f"{run.name()}.json")


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_record(out: str, run: RunConfig, stage: str = "ladder"):
    path = record_path(out, run, stage)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_tensorboard(log_dir: str, record: dict) -> None:
    """A run's curve and update angles as TensorBoard scalars (x axis: training step)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir) as writer:
        for kind in ("curve", "angles"):
            for point in record[kind]:
                for key, value in point.items():
                    if key != "step":
                        tag = f"update_angle/{key}" if kind == "angles" else key
                        writer.add_scalar(tag, value, point["step"])


def choose_lrs(records: list) -> dict:
    """``{algorithm: lr}`` with the best val top-1 (diverged runs count as 0; ties: smaller)."""
    best = {}
    for record in records:
        config = record["config"]
        score = record["top1"] if record["top1"] is not None else 0.0
        key = (score, -config["lr"])
        if config["algorithm"] not in best or key > best[config["algorithm"]][0]:
            best[config["algorithm"]] = (key, config["lr"])
    return {algorithm: lr for algorithm, (_, lr) in sorted(best.items())}


class Study:
    """Runs this shard's share of the study into ``out`` (see the module docstring)."""

    def __init__(self, out: str, shard=(0, 1), log=print, data_dir=None, lrs=None, **common):
        """``lrs``: ``{algorithm: lr}`` given instead of swept: the study is then the ladder of
        these algorithms only (e.g. a second lr for one algorithm, in another ``out``)."""
        self.out, self.shard, self.log, self.common = out, shard, log, common
        self.lrs = dict(lrs or {})
        self.data_dir = data_dir or os.path.join(out, "data")
        self.data = {}

    def splits(self, task: str) -> dict:
        if task not in self.data:
            sizes = SWEEP_SIZES if task == SWEEP_TASK else SIZES
            size = self.common.get("image_size", RunConfig.image_size)
            start = time.perf_counter()
            self.data[task] = load_task(self.data_dir, task, sizes, size)
            self.log(f"task {task}: {sizes} ready in {time.perf_counter() - start:.0f}s")
        return self.data[task]

    def mine(self, runs: list) -> list:
        index, count = self.shard
        return runs[index::count]

    def execute(self, run: RunConfig, stage: str) -> dict:
        """Train ``run`` (sweep: scored on val; ladder: on test) unless its record exists."""
        record = read_record(self.out, run, stage)
        if record is not None:
            return record
        splits = dict(self.splits(run.task))
        if stage == "sweep":
            splits.pop("test", None)
        else:
            splits.pop("val", None)
        record, checkpoint = train(run, splits, TASKS[run.task].num_classes, log=self.log)
        if saves_checkpoint(run):
            path = os.path.join(self.out, "checkpoints", f"{run.name()}.pth")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_save(checkpoint, path)
        write_tensorboard(os.path.join(self.out, "tensorboard", run.name()), record)
        write_json(record_path(self.out, run, stage), record)
        self.log(f"done {run.name()}: top-1 {record['top1']} in {record['cpu_seconds']:.0f} CPU-s")
        return record

    def sweep(self, wait_seconds: float = 20.0) -> dict:
        """This shard's sweep runs, then (once all shards' are done) the chosen lrs."""
        runs = sweep_runs(**self.common)
        for run in self.mine(runs):
            self.execute(run, "sweep")
        while True:
            records = [read_record(self.out, run, "sweep") for run in runs]
            if all(record is not None for record in records):
                break
            self.log("waiting for the other shards' sweep runs")
            time.sleep(wait_seconds)
        chosen = choose_lrs(records)
        write_json(os.path.join(self.out, "chosen_lrs.json"), chosen)
        return chosen

    def ladder(self, chosen: dict) -> None:
        runs = self.mine(ladder_runs(chosen, **self.common))
        for number, run in enumerate(runs):
            self.log(f"[{number + 1}/{len(runs)}] {run.name()}")
            self.execute(run, "ladder")

    def run(self) -> None:
        torch.set_num_threads(1)
        self.ladder(self.lrs or self.sweep())
