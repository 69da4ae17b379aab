"""Collect a study's COCO AP and alignment angles from each run's metrics.json; write the
report: a markdown table (mean ± std over seeds), PNG plots and the raw JSON."""

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..config import PARTS as CONFIG_PARTS
from ..utils.plots import plt, read_metrics, series

METRICS = ("AP", "AP50", "AP75")
#: The detector parts as the alignment hook logs them (lower case), in alphabetical order.
PARTS = tuple(sorted(part.lower() for part in CONFIG_PARTS))


def _ap(value):
    """COCOEvaluator reports NaN when the model detects nothing at all: that AP is 0."""
    return 0.0 if value is None or math.isnan(value) else value


def collect(runs):
    """{variant: [{"seed", "minutes", "final": {AP..}, "ap_curve": [(it, AP)], "angles"}]}."""
    results = defaultdict(list)
    for run in runs:
        metrics = run.output_dir / "metrics.json"
        if not run.done:
            continue
        records = read_metrics(metrics) if metrics.is_file() else []
        evals = [r for r in records if "bbox/AP" in r]
        diverged = run.diverged
        if not evals and not diverged:
            continue
        angles = {
            f"{kind}/{part}": list(zip(*series(records, f"{kind}/{part}")))
            for kind in ("weight_angle", "grad_angle")
            for part in PARTS
        }
        done = json.loads((run.output_dir / "done.json").read_text())
        results[run.variant].append(
            {
                "seed": run.seed,
                "minutes": done.get("seconds", float("nan")) / 60,
                "diverged": diverged,
                "final": None if diverged else {m: _ap(evals[-1][f"bbox/{m}"]) for m in METRICS},
                "ap_curve": [(r["iteration"], _ap(r["bbox/AP"])) for r in evals],
                "angles": {k: v for k, v in angles.items() if v},
            }
        )
    return dict(results)


def _mean_std(values):
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _converged(seeds):
    """The runs of a variant that did not diverge."""
    return [s for s in seeds if not s.get("diverged")]


def table(results):
    """Markdown: one row per variant: runs, diverged runs, AP/AP50/AP75 mean ± std over the
    runs that did not diverge, final angle(B, W) per part, minutes per run."""
    head = ["variant", "runs", "diverged", *METRICS, *(f"∠(B,W) {p}" for p in PARTS), "min/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, seeds in results.items():
        ok = _converged(seeds)
        cells = [variant, str(len(seeds)), str(len(seeds) - len(ok))]
        cells += [_mean_std([s["final"][m] for s in ok]) if ok else "–" for m in METRICS]
        for part in PARTS:
            finals = [
                s["angles"][f"weight_angle/{part}"][-1][1]
                for s in ok
                if f"weight_angle/{part}" in s["angles"]
            ]
            cells.append(_mean_std(finals) if finals else "–")
        cells.append(f"{statistics.mean(s.get('minutes', float('nan')) for s in seeds):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    diverged = [
        f"- {variant} seed {s['seed']}: {s['diverged']}"
        for variant, seeds in results.items()
        for s in seeds
        if s.get("diverged")
    ]
    if diverged:
        lines += ["", "Diverged runs (detectron2 stopped them on a non-finite loss):", *diverged]
    return "\n".join(lines)


def _plot_mean_curves(ax, curves, label):
    """Mean over seeds of (iteration, value) curves sampled at the same iterations."""
    by_iter = defaultdict(list)
    for curve in curves:
        for it, value in curve:
            by_iter[it].append(value)
    its = sorted(by_iter)
    ax.plot(its, [statistics.mean(by_iter[i]) for i in its], label=label)


def plot_ap(results, out_png):
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, seeds in results.items():
        ok = _converged(seeds)
        if ok:
            _plot_mean_curves(ax, [s["ap_curve"] for s in ok], variant)
    ax.set_xlabel("iteration")
    ax.set_ylabel("COCO box AP (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_angles(results, out_png):
    """Per part: angle(B, W) (top row) and angle(rule's dL/dx, backprop's) (bottom row)."""
    kinds = (("weight_angle", "angle(B, W)"), ("grad_angle", "angle(dx, dx_bp)"))
    fig, axes = plt.subplots(
        len(kinds), len(PARTS), figsize=(4 * len(PARTS), 3.2 * len(kinds)), sharey=True
    )
    for row, (kind, title) in zip(axes, kinds):
        for ax, part in zip(row, PARTS):
            for variant, seeds in results.items():
                key = f"{kind}/{part}"
                curves = [s["angles"][key] for s in _converged(seeds) if key in s["angles"]]
                if curves:
                    _plot_mean_curves(ax, curves, variant)
            ax.set_title(f"{title}: {part}", fontsize=9)
            ax.set_ylim(0, 95)
        row[0].set_ylabel("degrees (mean over seeds)")
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    if results:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def write_report(results, out_dir, header=""):
    """Write report.md, ap_vs_iteration.png, alignment.png and results.json to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_ap(results, out_dir / "ap_vs_iteration.png")
    plot_angles(results, out_dir / "alignment.png")
    text = "\n\n".join(
        [header.strip(), table(results), "![AP](ap_vs_iteration.png)", "![angles](alignment.png)"]
    )
    (out_dir / "report.md").write_text(text.strip() + "\n")
    return out_dir / "report.md"
