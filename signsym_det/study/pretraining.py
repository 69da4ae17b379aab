"""The pretraining stage of a two-stage study (Xiao et al.'s protocol): per (rule, seed),
``python -m signsym_det.pretrain_net`` on a classification set, then the result converted to
detectron2 names (:func:`signsym_det.checkpoint.convert_pretrained`); the detection runs of
that rule and seed start from it through ``MODEL.WEIGHTS``.

Variants with the same rule and the same extra pretraining flags share one pretraining run
(``<study>/pretrain/<rule>[+flag...]/seed<k>``), e.g. a rule at two detection schedules. The
stage is done when ``done.json`` is there (written after the conversion); it is trained again
if its weights are gone (a record restored on another machine) while a detection run still
needs them. An interrupted one resumes from its ``checkpoint.pth`` (``--resume``). Shards
that need the same run take a lock (``.lock``: host and pid); one trains, the others wait.
"""

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..checkpoint import convert_pretrained, load_weights_only
from ..checkpoint.io import atomic_write_text
from .records import DONE, RECORD_FILES

#: The pretraining job, run as ``python -m PRETRAIN_NET``.
PRETRAIN_NET = "signsym_det.pretrain_net"
#: The converted backbone (detectron2 names) the detection runs load.
WEIGHTS = "backbone_d2.pth"
LOCK = ".lock"
#: Variant key holding the extra pretraining flags (``PRETRAIN=--weight-norm-constraint``).
PRETRAIN_KEY = "PRETRAIN"
RULE_KEYS = ("MODEL.FEEDBACK.BACKBONE.RULE", "MODEL.FEEDBACK.RULE")


@dataclass
class Pretraining:
    """One pretraining run: ``pretrain_net ARGS --output-dir output_dir``."""

    name: str
    seed: int
    output_dir: Path
    args: list = field(default_factory=list)

    @property
    def done(self) -> bool:
        return (self.output_dir / DONE).is_file()

    @property
    def weights(self) -> Path:
        return self.output_dir / WEIGHTS

    @property
    def info(self) -> dict:
        """done.json: seconds, command, diverged, top1/top5 (val, %, at the end)."""
        return json.loads((self.output_dir / DONE).read_text())


def backbone_rule(opts) -> str:
    """The rule the backbone trains with, from detectron2 options ``[KEY, VALUE, ...]``:
    the last non-empty ``MODEL.FEEDBACK.BACKBONE.RULE``, else the last ``MODEL.FEEDBACK.RULE``."""
    values = dict(zip(opts[::2], opts[1::2]))  # later options win, as in merge_from_list
    for key in RULE_KEYS:
        if values.get(key):
            return values[key]
    raise ValueError(
        f"a pretrained variant needs {RULE_KEYS[1]} (or {RULE_KEYS[0]}) in its options, got {opts}"
    )


def pop_pretrain_flags(opts) -> tuple:
    """(opts without the ``PRETRAIN`` entries, the pretraining flags they held)."""
    kept, flags = [], []
    for key, value in zip(opts[::2], opts[1::2]):
        if key == PRETRAIN_KEY:
            flags += value.split()
        else:
            kept += [key, value]
    return kept, flags


def pretraining_name(rule: str, flags) -> str:
    """Directory name: the rule, then each flag without its dashes, joined by "+"."""
    return "+".join([rule, *(re.sub(r"[^A-Za-z0-9_.=-]", "_", f.lstrip("-")) for f in flags)])


def plan_pretraining(study_dir, rule, flags, seed, base_args) -> Pretraining:
    """The pretraining run of ``rule`` with ``flags`` and ``seed`` (``base_args``: the study's
    pretrain_net options, e.g. ``["@configs/ImageNet/Shapes-R18.args", "--data", DIR]``)."""
    name = pretraining_name(rule, flags)
    output_dir = Path(study_dir) / "pretrain" / name / f"seed{seed}"
    args = [*base_args, "--rule", rule, *flags, "--seed", str(seed)]
    return Pretraining(name, seed, output_dir, [*args, "--output-dir", str(output_dir)])


def top_k(checkpoint_path) -> dict:
    """{"top1", "top5"}: the val metrics a pretrain_net checkpoint records (None if none)."""
    metrics = load_weights_only(str(checkpoint_path)).get("metrics") or {}
    return {k: metrics.get(f"val_{k}", metrics.get(k)) for k in ("top1", "top5")}


class Lock:
    """An exclusive lock file for ``directory`` (``with Lock(d, wait=...)``); a lock left by
    a dead process of this host is taken over."""

    def __init__(self, directory: Path, poll: float = 30.0, log=print):
        self.path, self.poll, self.log = Path(directory) / LOCK, poll, log
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def _stale(self) -> bool:
        try:
            host, pid = self.path.read_text().split(":")
        except (OSError, ValueError):
            return False  # being written: not ours to judge yet
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                self.log(f"waiting for {self.path} ({self.path.read_text(errors='replace')})")
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner)
            return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def run_pretraining(stage: Pretraining, python, call, log=print) -> Optional[str]:
    """Make sure ``stage`` is done (pretrain, convert, ``done.json``); returns its divergence
    line (None if it trained). ``call(cmd, log_file, output_dir)`` -> (exit code, seconds,
    divergence line) runs the job (the study runner's timed call)."""
    with Lock(stage.output_dir, log=log):
        if stage.done and (stage.info.get("diverged") or stage.weights.is_file()):
            return stage.info.get("diverged")
        if stage.done:  # a record restored without its weights (study/records.py)
            log(f"pretraining {stage.name} seed {stage.seed}: weights gone, training it again")
            for name in RECORD_FILES:
                (stage.output_dir / name).unlink(missing_ok=True)
        cmd = [python, "-m", PRETRAIN_NET, *stage.args, "--resume"]
        log(f"pretraining {stage.name} seed {stage.seed}: {stage.output_dir}")
        code, seconds, diverged = call(cmd, stage.output_dir / "study_stdout.log", stage.output_dir)
        if code != 0 and diverged is None:
            raise RuntimeError(
                f"pretraining {stage.name} seed {stage.seed} failed (exit {code}); see "
                f"{stage.output_dir / 'study_stdout.log'}"
            )
        info = {"name": stage.name, "seed": stage.seed, "seconds": seconds, "command": cmd}
        info.update(diverged=diverged, top1=None, top5=None)
        if not diverged:
            final = stage.output_dir / "model_final.pth"
            convert_pretrained(final, stage.weights)
            info.update(top_k(final))
        atomic_write_text(json.dumps(info, indent=1), stage.output_dir / DONE)
        return diverged
