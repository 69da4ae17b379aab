"""The study's detection runs: RetinaNet on the shapes set from a study-pretrained convnet.

``run_detection(out, algorithm)``: the conv run of ``algorithm`` on :data:`.study.CHECKPOINT_TASK`
with seed 0 (``OUT/checkpoints/*.pth``) is converted (``convert_pretrained``) to
``OUT/detection/{algorithm}/backbone.pth`` and RetinaNet trains from it with
``configs/Shapes-ConvNet/Base-Shapes-RetinaNet-ConvNet.yaml`` (plus ``opts``) through
``train_net`` (checked loading, resumable: ``--resume``). ``summary.json`` (written last; a
run with one is skipped) holds the final COCO AP/AP50/AP75 and the AP curve.
"""

from __future__ import annotations

import glob
import json
import os
import time

from ..checkpoint import convert_pretrained
from ..model_zoo import get_config_file
from .study import CHECKPOINT_TASK, write_json

CONFIG = "Shapes-ConvNet/Base-Shapes-RetinaNet-ConvNet.yaml"


def pretrained_checkpoint(out: str, algorithm: str) -> str:
    """The study checkpoint a detection run starts from (exactly one must exist)."""
    pattern = os.path.join(out, "checkpoints", f"{CHECKPOINT_TASK}-conv-{algorithm}-lr*-s0.pth")
    found = sorted(glob.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"need exactly one {pattern}, found {found}")
    return found[0]


def read_ap(output_dir: str) -> list:
    """Every evaluation in ``metrics.json``: ``[{"iteration", "AP", "AP50", "AP75"}]``."""
    points = []
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            row = json.loads(line)
            if "bbox/AP" in row:
                keys = ("AP", "AP50", "AP75")
                points.append(
                    {"iteration": row["iteration"], **{k: row[f"bbox/{k}"] for k in keys}}
                )
    return points


def run_detection(out: str, algorithm: str, opts=(), datasets: str | None = None) -> dict:
    """Train (or resume) the detection run of ``algorithm``; returns its summary."""
    run_dir = os.path.join(out, "detection", algorithm)
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            return json.load(f)
    if datasets:
        os.environ["DETECTRON2_DATASETS"] = datasets
    from .. import train_net

    source = pretrained_checkpoint(out, algorithm)
    weights = os.path.join(run_dir, "backbone.pth")
    os.makedirs(run_dir, exist_ok=True)
    convert_pretrained(source, weights)
    output_dir = os.path.join(run_dir, "train")
    wall, cpu = time.perf_counter(), time.process_time()
    argv = [
        "--config-file",
        get_config_file(CONFIG),
        "--resume",
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        output_dir,
        *opts,
    ]
    train_net.main(argv)
    points = read_ap(output_dir)
    summary = {
        "algorithm": algorithm,
        "pretrained_from": os.path.basename(source),
        "config": CONFIG,
        "opts": list(opts),
        "bbox": points[-1] if points else {},
        "ap_curve": points,
        "iterations": points[-1]["iteration"] if points else None,
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }
    write_json(summary_path, summary)
    return summary
