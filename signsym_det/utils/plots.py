"""Plots of a detectron2 run: losses and feedback alignment angles from its metrics.json."""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path):
    """The records of detectron2's JSONWriter (one JSON object per line), in order.

    A resumed run appends to the file from its last checkpoint, after records of the
    iterations it is about to redo: where the iteration goes back to i, the earlier records
    of iterations >= i are dropped, so each iteration is the resumed run's."""
    records = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            iteration = record.get("iteration")
            if iteration is not None and records and iteration < records[-1].get("iteration", -1):
                records = [r for r in records if r.get("iteration", -1) < iteration]
            records.append(record)
    return records


def series(records, key):
    """(iterations, values) of one scalar, skipping records that lack it."""
    points = [(r["iteration"], r[key]) for r in records if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(metrics_json, out_png, title=""):
    """Two panels: the losses, and the per-part alignment angles (degrees) over iterations."""
    records = read_metrics(metrics_json)
    keys = sorted({k for r in records for k in r})
    losses = [k for k in keys if k.startswith("loss") or k == "total_loss"]
    angles = [k for k in keys if k.startswith(("weight_angle/", "grad_angle/"))]
    fig, (ax_loss, ax_angle) = plt.subplots(1, 2, figsize=(11, 4))
    for key in losses:
        ax_loss.plot(*series(records, key), label=key)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=8)
    for key in angles:
        style = "-" if key.startswith("weight") else "--"
        ax_angle.plot(*series(records, key), style, label=key)
    ax_angle.set_xlabel("iteration")
    ax_angle.set_ylabel("angle (degrees)")
    ax_angle.set_ylim(0, 95)
    ax_angle.set_title("angle(B, W) solid; angle(rule grad, backprop grad) dashed", fontsize=9)
    if angles:
        ax_angle.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
