"""Collect a study's COCO AP and alignment angles from each run's metrics.json (and, in a
two-stage study, each pretraining's top-1 and angles); write the report: markdown tables
(mean ± std over seeds, relative gaps), PNG plots and the raw JSON."""

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..config import PARTS as CONFIG_PARTS
from ..utils.plots import plt, read_metrics, series
from .gaps import gap_rows, gap_table
from .heldout import heldout_table, read_heldout
from .records import DONE

METRICS = ("AP", "AP50", "AP75")
#: The detector parts as the alignment hook logs them (lower case), in alphabetical order.
PARTS = tuple(sorted(part.lower() for part in CONFIG_PARTS))
#: The ResNet stages the pretraining logs angles for (pretrain_net's metrics.jsonl).
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")


def _ap(value):
    """COCOEvaluator reports NaN when the model detects nothing at all: that AP is 0."""
    return 0.0 if value is None or math.isnan(value) else value


def _rule(opts):
    """The last MODEL.FEEDBACK.RULE of a run's options (None if it sets none)."""
    values = dict(zip(opts[::2], opts[1::2]))
    return values.get("MODEL.FEEDBACK.RULE")


def _pretraining(stage):
    """{"name", "top1", "top5", "minutes", "angles"} of a finished pretraining (else None)."""
    if stage is None or not stage.done:
        return None
    info = stage.info
    metrics = stage.output_dir / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    angles = {
        f"weight_angle/{name}": list(zip(*series(records, f"weight_angle/{name}")))
        for name in STAGES
    }
    return {
        "name": stage.name,
        "top1": info.get("top1"),
        "top5": info.get("top5"),
        "diverged": info.get("diverged"),
        "minutes": info.get("seconds", float("nan")) / 60,
        "angles": {k: v for k, v in angles.items() if v},
    }


def collect(runs):
    """{variant: [{"seed", "rule", "minutes", "final": {AP..}, "ap_curve": [(it, AP)],
    "angles", "pretraining"}]} ("pretraining": None without a pretraining stage; a run tested
    on a held-out set also has "heldout": {AP..} and "heldout_set": :mod:`.heldout`)."""
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
        done = json.loads((run.output_dir / DONE).read_text())
        heldout = None if diverged else read_heldout(run.output_dir)
        results[run.variant].append(
            {
                "seed": run.seed,
                "rule": _rule(run.opts),
                "minutes": done.get("seconds", float("nan")) / 60,
                "diverged": diverged,
                "final": None if diverged else {m: _ap(evals[-1][f"bbox/{m}"]) for m in METRICS},
                "ap_curve": [(r["iteration"], _ap(r["bbox/AP"])) for r in evals],
                "angles": {k: v for k, v in angles.items() if v},
                "pretraining": _pretraining(run.pretraining),
                **(
                    {
                        "heldout": {m: _ap(heldout["bbox"][m]) for m in METRICS},
                        "heldout_set": heldout["set"],
                    }
                    if heldout
                    else {}
                ),
            }
        )
    return dict(results)


def _progress(output_dir):
    """ "at iteration N (train top-1 x %)" from the last record of a running pretraining's
    metrics.jsonl; None if it has logged nothing yet."""
    metrics = output_dir / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    if not records:
        return None
    last = records[-1]
    top1 = f" (train top-1 {last['train_top1']:.0f} %)" if "train_top1" in last else ""
    return f"at iteration {last['iteration'] + 1}{top1}"


def detection_progress(run):
    """ "variant/seedK", plus " (at iteration N, AP x at M)" for an unfinished run that has
    logged (the last COCO AP, if any)."""
    metrics = run.output_dir / "metrics.json"
    records = read_metrics(metrics) if metrics.is_file() else []
    name = f"{run.variant}/seed{run.seed}"
    if not records:
        return name
    evals = [r for r in records if "bbox/AP" in r]
    ap = f", AP {_ap(evals[-1]['bbox/AP']):.1f} at {evals[-1]['iteration'] + 1}" if evals else ""
    return f"{name} (at iteration {records[-1]['iteration'] + 1}{ap})"


def pretraining_table(runs):
    """Markdown: the pretraining stages of ``runs`` that are finished or under way (each
    once, however many runs share it): seeds done, val top-1 / top-5 mean ± std over the
    finished ones, minutes per run, and where the unfinished ones are; "" if none."""
    stages, running = {}, {}
    for run in runs:
        stage = run.pretraining
        if stage is not None and stage.done:
            stages.setdefault(stage.name, {})[stage.seed] = stage.info
        elif stage is not None and _progress(stage.output_dir):
            running[f"{stage.name} seed {stage.seed}"] = _progress(stage.output_dir)
    if not stages and not running:
        return ""
    head = ["pretraining", "seeds done", "diverged", "val top-1 %", "val top-5 %", "min/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by_seed in stages.items():
        ok = [i for i in by_seed.values() if not i.get("diverged") and i.get("top1") is not None]
        cells = [name, str(sorted(by_seed)), str(len(by_seed) - len(ok))]
        cells += [_mean_std([i[k] for i in ok]) if ok else "–" for k in ("top1", "top5")]
        minutes = statistics.mean(i["seconds"] / 60 for i in by_seed.values())
        lines.append("| " + " | ".join([*cells, f"{minutes:.0f}"]) + " |")
    lines += [f"\nUnder way: {name}: {where}." for name, where in running.items()]
    return "\n".join(lines)


def _mean_std(values):
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _converged(seeds):
    """The runs of a variant that did not diverge."""
    return [s for s in seeds if not s.get("diverged")]


def _top1(seeds):
    """Pretraining val top-1 (mean ± std over the variant's runs), "–" if none."""
    values = [s["pretraining"]["top1"] for s in seeds if (s.get("pretraining") or {}).get("top1")]
    return _mean_std(values) if values else "–"


def table(results):
    """Markdown: one row per variant: runs, diverged runs, (pretraining top-1 if any run was
    pretrained,) AP/AP50/AP75 mean ± std over the runs that did not diverge, final angle(B, W)
    per part, minutes per run (detection; pretraining minutes in the pretraining column)."""
    pretrained = any(s.get("pretraining") for seeds in results.values() for s in seeds)
    head = ["variant", "runs", "diverged", *(["pretrain top-1 %"] if pretrained else [])]
    head += [*METRICS, *(f"∠(B,W) {p}" for p in PARTS), "min/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, seeds in results.items():
        ok = _converged(seeds)
        cells = [variant, str(len(seeds)), str(len(seeds) - len(ok))]
        cells += [_top1(seeds)] if pretrained else []
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
    if ax.get_legend_handles_labels()[0]:
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
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_pretraining_angles(results, out_png):
    """angle(B, W) per ResNet stage during pretraining, mean over seeds per pretraining run
    (one curve per pretraining name, however many variants share it)."""
    runs = {}
    for seeds in results.values():
        for s in seeds:
            stage = s.get("pretraining")
            if stage:
                runs.setdefault(stage["name"], {})[s["seed"]] = stage["angles"]
    fig, axes = plt.subplots(1, len(STAGES), figsize=(3.4 * len(STAGES), 3.2), sharey=True)
    for ax, name in zip(axes, STAGES):
        for label, by_seed in runs.items():
            curves = [
                a[f"weight_angle/{name}"] for a in by_seed.values() if f"weight_angle/{name}" in a
            ]
            if curves:
                _plot_mean_curves(ax, curves, label)
        ax.set_title(f"pretraining angle(B, W): {name}", fontsize=8)
        ax.set_ylim(0, 95)
        ax.set_xlabel("iteration")
    axes[0].set_ylabel("degrees (mean over seeds)")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def write_report(results, out_dir, header="", reference=None):
    """Write report.md, ap_vs_iteration.png, alignment.png and results.json to out_dir; in a
    two-stage study also pretraining_alignment.png. ``reference``: another study's results
    (from scratch) for the relative-gap table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_ap(results, out_dir / "ap_vs_iteration.png")
    plot_angles(results, out_dir / "alignment.png")
    parts = [header.strip(), table(results)]
    if any(s.get("pretraining") for seeds in results.values() for s in seeds):
        plot_pretraining_angles(results, out_dir / "pretraining_alignment.png")
        parts.append("![pretraining angles](pretraining_alignment.png)")
    parts += [
        "Relative gaps (mean final AP over seeds; AP_bp: the bp variant of the same schedule):",
        gap_table(gap_rows(results, reference)),
        heldout_table(results, _mean_std),
        "![AP](ap_vs_iteration.png)",
        "![angles](alignment.png)",
    ]
    text = "\n\n".join(part for part in parts if part)
    (out_dir / "report.md").write_text(text.strip() + "\n")
    return out_dir / "report.md"
