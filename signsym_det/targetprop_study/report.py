"""The Bartunov study's report from its run directory: results.json, report.md and PNGs.

Reads ``OUT/runs/*.json`` and ``OUT/runs/sweep/*.json`` (:mod:`.study`),
``OUT/chosen_lrs.json`` and the detection runs' ``OUT/detection/{algorithm}/summary.json``
(:mod:`.detection`); works on a partial study (counts say how many seeds each cell has).
"""

from __future__ import annotations

import glob
import json
import math
import os
import statistics

import matplotlib
import torch

from ..classification.data import IMAGENET_MEAN, IMAGENET_STD

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .study import ALGORITHMS, ARCHS, LADDER_ALGORITHMS, SWEEP_TASK, write_json  # noqa: E402
from .tasks import TASKS  # noqa: E402

ARCH_NAMES = {"conv": "conv", "lc": "locally connected"}


def load_records(out: str) -> list:
    records = []
    paths = glob.glob(os.path.join(out, "runs", "*.json"))
    for path in sorted(paths + glob.glob(os.path.join(out, "runs", "sweep", "*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    return records


def mean_std(values: list) -> tuple:
    """``(mean, sample std or 0, n)`` of the non-None values (None: diverged, counted 0)."""
    values = [0.0 if v is None else v for v in values]
    if not values:
        return None, None, 0
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def ladder_cells(records: list) -> dict:
    """``{(task, arch, algorithm): [records over seeds]}`` of the ladder (test) runs."""
    cells = {}
    for record in records:
        if record["eval_split"] != "test":
            continue
        c = record["config"]
        cells.setdefault((c["task"], c["arch"], c["algorithm"]), []).append(record)
    return cells


def hidden_angle(point: dict) -> float:
    """Mean angle to backprop over the hidden layers whose update differs from backprop's
    (all but the last hidden conv and the output layer, which every algorithm but DFA and
    SDTP trains exactly)."""
    names = sorted(k for k in point if k.startswith("layers.") and k.endswith("0.weight"))
    return statistics.fmean(point[n] for n in names[:-1])


def summarise(out: str) -> dict:
    records = load_records(out)
    cells = ladder_cells(records)
    ladder = {}
    for (task, arch, algorithm), runs in sorted(cells.items()):
        mean, std, n = mean_std([r["top1"] for r in runs])
        final_angles = [r["angles"][-1] for r in runs if r["angles"]]
        ladder.setdefault(task, {}).setdefault(arch, {})[algorithm] = {
            "top1_mean": mean,
            "top1_std": std,
            "seeds": n,
            "top1": [r["top1"] for r in runs],
            "final_update_angle": (
                statistics.fmean(hidden_angle(p) for p in final_angles) if final_angles else None
            ),
            "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
        }
    sweep = [
        {"algorithm": r["config"]["algorithm"], "lr": r["config"]["lr"], "val_top1": r["top1"]}
        for r in records
        if r["eval_split"] == "val"
    ]
    chosen_path = os.path.join(out, "chosen_lrs.json")
    chosen = json.load(open(chosen_path)) if os.path.exists(chosen_path) else {}
    detection = {}
    for path in sorted(glob.glob(os.path.join(out, "detection", "*", "summary.json"))):
        with open(path) as f:
            detection[os.path.basename(os.path.dirname(path))] = json.load(f)
    return {
        "chosen_lrs": chosen,
        "sweep": sweep,
        "ladder": ladder,
        "detection": detection,
        "cpu_seconds": sum(r["cpu_seconds"] for r in records),
        "runs": records,
    }


def fmt(cell) -> str:
    if cell is None or cell["top1_mean"] is None:
        return "-"
    return f"{cell['top1_mean']:.1f} ± {cell['top1_std']:.1f} ({cell['seeds']})"


def markdown(summary: dict) -> str:
    lines = ["# Bartunov et al. at laptop scale: results", ""]
    lines += [
        "Test top-1 (%), mean ± std over seeds (number of seeds); chance: "
        + ", ".join(f"{t} {100 / TASKS[t].num_classes:.1f}" for t in TASKS)
        + ".",
        "",
    ]
    for task in TASKS:
        rows = summary["ladder"].get(task, {})
        lines += [f"## {task}: {TASKS[task].description}", ""]
        lines += [
            "| algorithm | conv | locally connected | conv - bp | LC - bp | angle conv / LC |"
        ]
        lines += ["|---|---|---|---|---|---|"]
        for algorithm in LADDER_ALGORITHMS:
            cells = [rows.get(arch, {}).get(algorithm) for arch in ARCHS]
            gaps, angles = [], []
            for arch, cell in zip(ARCHS, cells):
                bp = rows.get(arch, {}).get("bp")
                ok = cell and bp and cell["top1_mean"] is not None
                gaps.append(f"{cell['top1_mean'] - bp['top1_mean']:+.1f}" if ok else "-")
                angle = cell and cell["final_update_angle"]
                angles.append(
                    "-"
                    if angle is None or not cell
                    else "zero update"
                    if math.isnan(angle)
                    else f"{angle:.0f}°"
                )
            lines.append(
                f"| {algorithm} | {fmt(cells[0])} | {fmt(cells[1])} | "
                f"{gaps[0]} | {gaps[1]} | {' / '.join(angles)} |"
            )
        lines.append("")
    lines += [
        "Angle: the angle between the algorithm's weight update and backprop's on the same "
        "batch at the last measurement, mean over seeds and over the hidden layers whose "
        "update is not backprop's by construction (all but the last hidden conv); 'zero "
        "update': a layer's update was exactly 0 (all its units dead).",
        "",
    ]
    lines += [f"## LR sweep ({SWEEP_TASK}, conv, seed 0, val top-1 %)", ""]
    lrs = sorted({row["lr"] for row in summary["sweep"]})
    lines += ["| algorithm | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |"]
    lines += ["|---|" + "---|" * (len(lrs) + 1)]
    for algorithm in ALGORITHMS:
        found = {r["lr"]: r["val_top1"] for r in summary["sweep"] if r["algorithm"] == algorithm}
        values = [f"{found[lr]:.1f}" if found.get(lr) is not None else "-" for lr in lrs]
        chosen = summary["chosen_lrs"].get(algorithm)
        lines.append(f"| {algorithm} | " + " | ".join(values) + f" | {chosen or '-'} |")
    lines.append("")
    if summary["detection"]:
        lines += ["## RetinaNet on the shapes detection set, from a pretrained convnet", ""]
        lines += ["| backbone pretrained by | AP | AP50 | AP75 | iterations | CPU-min |"]
        lines += ["|---|---|---|---|---|---|"]
        for algorithm, d in summary["detection"].items():
            ap = d.get("bbox", {})
            lines.append(
                f"| {algorithm} | {ap.get('AP', float('nan')):.1f} | "
                f"{ap.get('AP50', float('nan')):.1f} | {ap.get('AP75', float('nan')):.1f}"
                f" | {d.get('iterations')} | {d.get('cpu_seconds', 0) / 60:.1f} |"
            )
        lines.append("")
    lines.append(
        f"Classification runs: {len(summary['runs'])}, "
        f"{summary['cpu_seconds'] / 60:.1f} CPU-minutes in all."
    )
    return "\n".join(lines) + "\n"


def _mean_curve(runs: list, kind: str, value) -> tuple:
    steps = [p["step"] for p in runs[0][kind]]
    ys = [
        statistics.fmean(value(r[kind][i]) for r in runs if len(r[kind]) > i)
        for i in range(len(steps))
    ]
    return steps, ys


def plot(summary: dict, path: str, kind: str) -> None:
    """Per task (rows) x arch (columns): test top-1 (``curve``) or update angle (``angles``)
    against the step, mean over seeds, one line per algorithm."""
    cells = ladder_cells(summary["runs"])
    fig, axes = plt.subplots(len(TASKS), len(ARCHS), figsize=(10, 3.2 * len(TASKS)), squeeze=False)
    for row, task in enumerate(TASKS):
        for col, arch in enumerate(ARCHS):
            ax = axes[row][col]
            for algorithm in LADDER_ALGORITHMS:
                runs = [r for r in cells.get((task, arch, algorithm), []) if r[kind]]
                if not runs or (kind == "angles" and algorithm == "bp"):
                    continue
                if kind == "curve":
                    steps, ys = _mean_curve(runs, kind, lambda p: p["test_top1"])
                else:
                    steps, ys = _mean_curve(runs, kind, hidden_angle)
                ax.plot(steps, ys, marker=".", label=algorithm)
            ax.set_title(f"{task}, {ARCH_NAMES[arch]}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("test top-1 (%)" if kind == "curve" else "angle to backprop (°)")
            if kind == "curve":
                ax.axhline(100 / TASKS[task].num_classes, color="grey", lw=0.5, ls="--")
            else:
                ax.axhline(90, color="grey", lw=0.5, ls="--")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_summary(summary: dict, path: str) -> None:
    """Final test top-1 per task and algorithm, conv (filled) vs locally connected (hatched)."""
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.2), squeeze=False)
    for ax, task in zip(axes[0], TASKS):
        for offset, arch in ((-0.2, "conv"), (0.2, "lc")):
            cells = [
                summary["ladder"].get(task, {}).get(arch, {}).get(a) for a in LADDER_ALGORITHMS
            ]
            means = [c["top1_mean"] if c and c["top1_mean"] is not None else 0 for c in cells]
            stds = [c["top1_std"] if c and c["top1_std"] is not None else 0 for c in cells]
            ax.bar(
                [i + offset for i in range(len(LADDER_ALGORITHMS))],
                means,
                0.4,
                yerr=stds,
                label=ARCH_NAMES[arch],
                hatch="//" if arch == "lc" else None,
            )
        ax.axhline(100 / TASKS[task].num_classes, color="grey", lw=0.5, ls="--")
        ax.set_xticks(range(len(LADDER_ALGORITHMS)), LADDER_ALGORITHMS, rotation=45, fontsize=7)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel("test top-1 (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_samples(data_dir: str, path: str, count: int = 8) -> None:
    """The first ``count`` training images of each task (rows), labels as titles."""
    fig, axes = plt.subplots(len(TASKS), count, figsize=(count * 1.1, len(TASKS) * 1.3))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    for row, task in enumerate(TASKS):
        found = sorted(glob.glob(os.path.join(data_dir, f"{task}_*px_seed0.pt")))
        images, labels = torch.load(found[0], weights_only=True)["splits"]["train"]
        for col in range(count):
            image = images[col].permute(1, 2, 0) * std + mean
            axes[row][col].imshow(image.clamp(0, 1).numpy())
            axes[row][col].set_title(f"{task} {int(labels[col])}", fontsize=6)
            axes[row][col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: str, results: str, data_dir: str | None = None) -> dict:
    """Write ``results.json``, ``report.md``, ``curves.png``, ``alignment.png``, ``top1.png``
    (and ``samples.png`` from the task cache ``data_dir``) to ``results``; returns the
    summary."""
    summary = summarise(out)
    os.makedirs(results, exist_ok=True)
    write_json(os.path.join(results, "results.json"), summary)
    with open(os.path.join(results, "report.md"), "w") as f:
        f.write(markdown(summary))
    if summary["runs"]:
        plot(summary, os.path.join(results, "curves.png"), "curve")
        plot(summary, os.path.join(results, "alignment.png"), "angles")
        plot_summary(summary, os.path.join(results, "top1.png"))
    if data_dir:
        plot_samples(data_dir, os.path.join(results, "samples.png"))
    return summary
