"""Compare learning rules: train every (variant, seed) with ``python -m signsym_det.train_net``,
collect COCO AP and alignment angles, write a report (markdown table, PNG plots, raw JSON).

    python -m signsym_det.study --config-file configs/Shapes-Demo/Base-Shapes-RetinaNet-R18.yaml \
        --out output/study --variants bp sign_symmetry fa \
        "ss_bp_pred:MODEL.FEEDBACK.RULE=sign_symmetry,MODEL.FEEDBACK.PREDICTOR.RULE=bp" \
        --seeds 0 1 2 [--report-dir docs/study] [-- KEY VALUE ...]

Finished runs are skipped and interrupted ones resumed, so rerunning continues a study.
``--shard K/N`` trains only every N-th run from the K-th: start N such processes (e.g. one
per core, pinned with ``taskset -c K`` and OMP_NUM_THREADS=1) on the same --out; each writes
the report of whatever has finished, and ``--report-only`` writes it again at the end.
(``tools/study.py`` is the same.)

Two-stage (Xiao et al.'s protocol): ``--pretrain-args "@configs/ImageNet/Shapes-R18.args
--make-dataset --data DIR"`` pretrains a backbone per (backbone rule, seed) with
``python -m signsym_det.pretrain_net`` (last layer by backprop unless the args say otherwise),
converts it, and fine-tunes each variant from it (``MODEL.WEIGHTS``); a variant's
``PRETRAIN=--flag ...`` adds pretraining flags (study/pretraining.py). ``--reference
results.json`` (a from-scratch study) adds its AP ratios to the relative-gap table.

``--test-datasets ROOT`` then evaluates each finished run's model_final.pth once on the sets
registered from ROOT (DETECTRON2_DATASETS=ROOT: e.g. a shapes set made with another seed, on
which nothing was chosen) into ``<run>/heldout.json``, and the report gets a held-out table
(study/heldout.py); with ``--shard``, each process tests its own runs.

``--records DIR`` keeps each finished stage's small files (done.json, metrics) in DIR as
well and restores them first (study/records.py): commit DIR, and the study resumes on a
machine that has only the checkout.
"""

import argparse
import shlex
import time

from .gaps import load_reference
from .heldout import describe_test_root, evaluate_heldout
from .records import Records
from .report import collect, detection_progress, pretraining_table, write_report
from .runs import plan_runs, run_all, shard


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--out", required=True, help="one output dir per run goes here")
    parser.add_argument(
        "--variants", nargs="+", required=True, help="rule names, or NAME:KEY=VALUE,KEY=VALUE"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--report-dir", help="where the report goes (default: --out)")
    parser.add_argument("--report-only", action="store_true", help="collect, don't train")
    parser.add_argument("--shard", default="0/1", help="K/N: train every N-th run from the K-th")
    parser.add_argument(
        "--pretrain-args",
        help="pretrain_net options (one string): pretrain each run's backbone with its rule",
    )
    parser.add_argument("--reference", help="results.json of a from-scratch study to compare")
    parser.add_argument(
        "--records",
        help="also keep each finished stage's done.json and metrics here, and restore the "
        "study from them (commit this dir: the study resumes on another machine)",
    )
    parser.add_argument(
        "--test-datasets",
        metavar="ROOT",
        help="after training (so not with --report-only), evaluate each finished run once on "
        "the sets registered from ROOT (a held-out DETECTRON2_DATASETS root); the report "
        "shows it beside val",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="-- KEY VALUE for every run")
    args = parser.parse_args(argv)
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    pretrain = None if args.pretrain_args is None else shlex.split(args.pretrain_args)
    runs = plan_runs(args.out, args.variants, args.seeds, args.opts, pretrain)
    if args.test_datasets:
        describe_test_root(args.test_datasets)  # a missing root fails before any training
    start = time.time()
    records = Records(args.out, args.records) if args.records else None
    if records:
        restored = records.restore()
        print(f"{len(restored)} finished stages restored from {args.records}")
        records.keep_finished(runs)
    if not args.report_only:
        run_all(shard(runs, args.shard), args.config_file, records=records)
        if args.test_datasets:
            evaluate_heldout(shard(runs, args.shard), args.test_datasets, records=records)
    results = collect(runs)
    finished = [s for seeds in results.values() for s in seeds]
    missing = [detection_progress(r) for r in runs if not r.done]
    stages = {
        (s["pretraining"]["name"], s["seed"]): s["pretraining"]
        for s in finished
        if s.get("pretraining")
    }
    pretrain_hours = sum(p["minutes"] for p in stages.values()) / 60
    opts_note = "those of the training invocations" if args.report_only else "none"
    header = (
        f"# Rule comparison: {args.config_file}\n\n"
        + (f"**IN PROGRESS: {len(finished)} of {len(runs)} runs done.**\n\n" if missing else "")
        + (f"Pretraining: `pretrain_net {args.pretrain_args}`.\n\n" if pretrain else "")
        + f"Seeds {args.seeds}; extra options {args.opts or opts_note}. {len(finished)} of "
        f"{len(runs)} runs finished, {sum(s['minutes'] for s in finished) / 60:.1f} h of "
        f"detection training in all (sum over runs)"
        + (f" plus {pretrain_hours:.1f} h of pretraining ({len(stages)} runs)" if stages else "")
        + f"; this invocation took {(time.time() - start) / 60:.1f} min."
        + (
            f"\n\nNot finished yet (rerun the command to continue): {', '.join(missing)}."
            if missing
            else ""
        )
    )
    stages_table = pretraining_table(runs)
    if stages_table:
        header += "\n\nPretraining stages so far:\n\n" + stages_table
    report = write_report(
        results, args.report_dir or args.out, header, load_reference(args.reference)
    )
    print(f"wrote {report}")
