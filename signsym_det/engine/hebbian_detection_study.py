"""Issue 18 part 4: RetinaNet on the shapes detection set with a Hebbian, random or trained stem.

``python -m signsym_det.engine.hebbian_detection_study --out OUT --seeds 0 1 2
[--shard K/N] [--report-dir DIR] [-- KEY VALUE ...]``

Arms: stem x rule. The stem (7x7 conv, 64 filters, the ResNet's ``stem.conv1``) is

* ``hebbian``: learned without labels on the detection set's train images by
  ``pretrain_hebbian --target stem`` (seed s), loaded through ``MODEL.WEIGHTS`` and frozen;
* ``random``: :func:`~signsym_det.pretrain_hebbian.initial_weight` for seed s (the Hebbian
  run's start) with rows scaled to unit p-norm (where the rule drives them), saved as the same
  kind of file, loaded and frozen the same way: the control that says what the rule adds;
* ``trained``: detectron2's own init, trained with the rest (the config's FREEZE_AT 0).

Frozen stems: ``MODEL.WEIGHTS <stem file> MODEL.FEEDBACK.CHECK_BACKBONE False
MODEL.BACKBONE.FREEZE_AT 1``: detectron2 freezes ``stem`` (conv1 and its norm, which becomes a
FrozenBatchNorm2d with the init statistics mean 0, var 1, i.e. the identity up to its eps).
The rest is trained by ``bp`` or by ``sign_symmetry`` (MODEL.FEEDBACK.RULE). Each run is
``python -m signsym_det.train_net`` through the rule study's runner (signsym_det.study):
a finished run (done.json) is skipped, an interrupted one resumes; ``--shard K/N`` runs every
N-th run. A stem is made just before its first run (under a file lock: shards share it).

The report (``--report-dir``, default OUT): the rule study's report.md (plus a stem x rule
table of AP and final training loss), ap_vs_iteration.png, loss_vs_iteration.png,
results.json, and stems.json: per stem file, the sizes of its groups of same-direction filters
(hebbian.filters.direction_groups, cosine > 0.95); per frozen-stem run, whether its final
stem equals the file bit for bit and its norm's values; per variant (first seed), which
parameters its model does not train. Filter grids: OUT/stems/.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from ..checkpoint.io import atomic_write_text
from ..data.register import shapes_root
from ..hebbian.filters import direction_groups, save_filter_grid
from ..model_zoo import get_config_file
from ..pretrain_hebbian import INIT, initial_weight, unit_rows
from ..pretrain_hebbian import main as pretrain_hebbian
from ..study import Run, collect, run_all, shard, write_report
from ..utils.plots import plt, read_metrics, series
from .hebbian_stem import STEM_WEIGHT, save_stem_weight

STEMS = ("hebbian", "random", "trained")
RULES = {"bp": "bp", "ss": "sign_symmetry"}
FROZEN_STEM = ("MODEL.FEEDBACK.CHECK_BACKBONE", "False", "MODEL.BACKBONE.FREEZE_AT", "1")
STEM_NORM = STEM_WEIGHT.replace("weight", "norm.")
CONFIG = "Shapes-Demo/Base-Shapes-RetinaNet-R18.yaml"


@contextmanager
def locked(path: Path):
    """An exclusive lock on the file ``path`` (other shards wait for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stem_file(args, stem: str, seed: int) -> Path:
    """The file the frozen-``stem`` runs of ``seed`` load through MODEL.WEIGHTS."""
    return Path(args.out) / "stems" / f"{stem}_seed{seed}" / "frozen_stem.pth"


def hebbian_arguments(args, seed: int) -> list:
    """``pretrain_hebbian`` arguments of seed ``seed``'s Hebbian stem."""
    out = stem_file(args, "hebbian", seed).parent
    return (
        ["--target", "stem", "--data", str(args.data), "--output-dir", str(out)]
        + ["--image-size", str(args.image_size), "--max-iter", str(args.stem_iter)]
        + ["--batch-size", str(args.stem_batch), "--eps0", str(args.eps0), "--p", str(args.p)]
        + ["--k", str(args.k), "--delta", str(args.delta), "--max-patches", str(args.max_patches)]
        + ["--patch-norm", args.patch_norm, "--seed", str(seed), "--workers", "0"]
        + ["--device", "cpu", "--log-period", "100", "--resume", "--no-tensorboard"]
        + ["--image-cache", str(Path(args.out) / "stems" / f"train_{args.image_size}px.pt")]
    )


def make_stem(args, stem: str, seed: int) -> Path:
    """The frozen stem file of (``stem``, ``seed``), made unless it exists. Both frozen stems
    have every filter at unit p-norm: the Hebbian filters are there already; filters that never
    won keep their N(0, 1) start (norm ~sqrt(147)) and are scaled like the random stem's, so
    that no filter dominates the stem's output by its scale (its norm is frozen at identity)."""
    path = stem_file(args, stem, seed)
    with locked(path.parent.parent / f".{path.parent.name}.lock"):  # one lock per stem file
        if path.is_file():
            return path
        if stem == "hebbian":
            tool = pretrain_hebbian(hebbian_arguments(args, seed))
            saved = torch.load(tool["stem"], weights_only=True)
            weight, feedback = saved["model"][STEM_WEIGHT], saved["feedback"]
            record = {**saved["hebbian"], "rows": f"scaled to unit {args.p}-norm"}
        else:
            weight = initial_weight((64, 3, 7, 7), seed)
            feedback = {"rule": "random", "init": f"{INIT}, rows at unit {args.p}-norm"}
            record = {"target": "stem", "seed": seed}
            save_filter_grid(weight, path.parent / "filters.png", f"random stem, seed {seed}")
        save_stem_weight(unit_rows(weight, args.p), feedback, record, path)
    return path


def plan(args) -> list:
    """(stem, run) of every (stem, rule, seed), seed-major, then rule, then stem."""
    runs = []
    for seed in args.seeds:
        for rule in args.rules:
            for stem in args.stems:
                opts = ["MODEL.FEEDBACK.RULE", RULES[rule]]
                if stem != "trained":
                    opts += ["MODEL.WEIGHTS", str(stem_file(args, stem, seed)), *FROZEN_STEM]
                opts += ["SEED", str(seed), "MODEL.FEEDBACK.SEED", str(seed), *args.opts]
                name = f"{stem}_stem_{rule}"
                runs.append((stem, Run(name, seed, Path(args.out) / name / f"seed{seed}", opts)))
    return runs


def final_stem(run: Run, path: Path) -> dict:
    """Does the run's final model (a diverged run: its last checkpoint) hold the stem file's
    weight bit for bit, and what are its stem norm's values (FrozenBatchNorm2d: weight, bias,
    running_mean, running_var)?"""
    final = run.output_dir / "model_final.pth"
    if not final.is_file():
        final = run.output_dir / (run.output_dir / "last_checkpoint").read_text().strip()
    model = torch.load(final, weights_only=True)["model"]
    loaded = torch.load(path, weights_only=True)["model"][STEM_WEIGHT]
    norm = {k[len(STEM_NORM) :]: v for k, v in model.items() if k.startswith(STEM_NORM)}
    return {
        "variant": run.variant,
        "seed": run.seed,
        "checkpoint": final.name,
        "stem_equals_file": torch.equal(model[STEM_WEIGHT], loaded),
        "stem_norm": {k: [v.min().item(), v.max().item()] for k, v in sorted(norm.items())},
    }


def parameters_frozen(run: Run) -> dict:
    """Which parameters the run's model does not train (requires_grad False), and how many it
    does: the model built from the run's config.yaml as train_net builds it."""
    from . import FeedbackTrainer, setup_cfg

    cfg = setup_cfg(str(run.output_dir / "config.yaml"), ["MODEL.DEVICE", "cpu"])
    named = list(FeedbackTrainer.build_model(cfg).named_parameters())
    return {
        "variant": run.variant,
        "frozen": [name for name, p in named if not p.requires_grad],
        "trained_tensors": sum(p.requires_grad for _, p in named),
    }


def final_loss(run: Run, windows: int = 3) -> float | None:
    """Mean of the last ``windows`` logged ``total_loss`` values (each the median over
    detectron2's 20-iteration window) of a run: a finer signal than AP early in training."""
    path = run.output_dir / "metrics.json"
    losses = (
        [r["total_loss"] for r in read_metrics(path) if "total_loss" in r] if path.is_file() else []
    )
    return statistics.fmean(losses[-windows:]) if losses else None


def plot_losses(planned: list, path: Path) -> None:
    """total_loss (detectron2's 20-iteration median) against iteration, one panel per rule,
    one line per stem: the mean over the finished seeds."""
    rules = list(dict.fromkeys(run.variant.rsplit("_", 1)[1] for _, run in planned))
    figure, axes = plt.subplots(1, len(rules), figsize=(5 * len(rules), 3.5), squeeze=False)
    for axis, rule in zip(axes[0], rules):
        for stem in STEMS:
            curves = [
                dict(zip(*series(read_metrics(run.output_dir / "metrics.json"), "total_loss")))
                for s, run in planned
                if s == stem and run.variant.endswith(rule) and run.done
            ]
            if curves:
                its = sorted(set.intersection(*(set(c) for c in curves)))
                mean = [statistics.fmean(c[i] for c in curves) for i in its]
                axis.plot(its, mean, label=f"{stem} stem (n={len(curves)})")
        axis.set_title(f"rest trained by {RULES[rule]}", fontsize=9)
        axis.set_xlabel("iteration")
        axis.set_ylabel("total loss (mean over seeds)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def stem_table(results: dict) -> str:
    """Markdown: one row per stem; per rule, AP and final training loss (mean ± std over the
    seeds that did not diverge) and how many runs diverged (detectron2 stopped them on NaN)."""

    def cell(values):
        if not values:
            return "–"
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.2f}{spread} (n={len(values)})"

    rules = sorted({v.rsplit("_", 1)[1] for v in results}, key=list(RULES).index)
    head = ["stem", *(f"AP, {r}" for r in rules), *(f"final loss, {r}" for r in rules)]
    head += [f"diverged, {r}" for r in rules]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stem in STEMS:
        seeds = {r: results.get(f"{stem}_stem_{r}", []) for r in rules}
        if any(seeds.values()):
            ok = {r: [s for s in seeds[r] if not s.get("diverged")] for r in rules}
            cells = [cell([s["final"]["AP"] for s in ok[r]]) for r in rules]
            cells += [cell([s["final_loss"] for s in ok[r]]) for r in rules]
            cells += [str(len(seeds[r]) - len(ok[r])) for r in rules]
            lines.append("| " + " | ".join([stem, *cells]) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="stems and one directory per run go here")
    p.add_argument("--config-file", default=get_config_file(CONFIG))
    p.add_argument("--data", default=None, help="detection set root (default: shapes_root())")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--stems", nargs="+", default=list(STEMS), choices=STEMS)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--shard", default="0/1", help="K/N: train every N-th run from the K-th")
    p.add_argument("--report-dir", help="where the report goes (default: --out)")
    p.add_argument("--report-only", action="store_true", help="collect, don't train")
    stem = p.add_argument_group("Hebbian stem (pretrain_hebbian --target stem)")
    stem.add_argument("--image-size", type=int, default=128)
    stem.add_argument("--stem-iter", type=int, default=1000)
    stem.add_argument("--stem-batch", type=int, default=20, help="images per step")
    stem.add_argument("--eps0", type=float, default=0.02)
    stem.add_argument("--p", type=float, default=2.0)
    stem.add_argument("--k", type=int, default=2)
    stem.add_argument("--delta", type=float, default=0.4)
    stem.add_argument("--max-patches", type=int, default=4096)
    stem.add_argument("--patch-norm", default="none")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="-- KEY VALUE for every run")
    return p


def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    args.data = str(Path(args.data or shapes_root()).absolute())
    planned = plan(args)
    runs = [run for _, run in planned]
    if not args.report_only:
        for stem, run in shard(planned, args.shard):  # each stem just before its first run
            if stem != "trained" and not run.done:
                make_stem(args, stem, run.seed)
            run_all([run], args.config_file)
    report_dir = Path(args.report_dir or args.out)
    report_dir.mkdir(parents=True, exist_ok=True)
    done = [(stem, run) for stem, run in planned if run.done]
    stems = sorted({(stem, run.seed) for stem, run in planned if stem != "trained"})
    files = {f"{stem}_seed{seed}": stem_file(args, stem, seed) for stem, seed in stems}
    checks = {
        "direction_groups": {
            name: direction_groups(torch.load(path, weights_only=True)["model"][STEM_WEIGHT])
            for name, path in files.items()
            if path.is_file()
        },
        "final_stems": [
            final_stem(run, stem_file(args, stem, run.seed))
            for stem, run in done
            if stem != "trained"
        ],
        "parameters": [parameters_frozen(run) for stem, run in done if run.seed == done[0][1].seed],
    }
    atomic_write_text(json.dumps(checks, indent=1) + "\n", report_dir / "stems.json")
    finished = sum(run.done for run in runs)
    header = (
        f"# Hebbian / random / trained stems: {args.config_file}\n\n"
        f"Seeds {args.seeds}; options {args.opts or 'none'}; {finished} of {len(runs)} runs "
        f"finished. Command: python -m signsym_det.engine.hebbian_detection_study "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    results = collect(runs)
    plot_losses(planned, report_dir / "loss_vs_iteration.png")
    for run in runs:
        for record in results.get(run.variant, []):
            if record["seed"] == run.seed:
                record["final_loss"] = final_loss(run)
    return write_report(results, report_dir, header + "\n\n" + stem_table(results))


if __name__ == "__main__":
    main()
