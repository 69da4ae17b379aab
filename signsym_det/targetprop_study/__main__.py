"""``python -m signsym_det.targetprop_study {run,report}``: Bartunov et al.'s study, small.

    python -m signsym_det.targetprop_study run --out /work/runs/bartunov --shard 0/2
    python -m signsym_det.targetprop_study detect --out /work/runs/bartunov --algorithm dtp
    python -m signsym_det.targetprop_study report --out /work/runs/bartunov \\
        --results results/bartunov_study

``run`` is resumable (finished runs are skipped) and sharded (``--shard i/n``: start n
processes); ``report`` writes results.json, report.md and the PNGs from whatever is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .study import LADDER_ALGORITHMS, Study, parse_shard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train this shard's runs (sweep, then ladder)")
    run.add_argument("--out", required=True, help="run directory (outside the clone)")
    run.add_argument("--shard", default="0/1", help="i/n: this process's share")
    run.add_argument("--steps", type=int, default=400, help="training steps per run")
    run.add_argument("--activation", default="relu")
    run.add_argument("--data", default=None, help="rendered-task cache (default: OUT/data)")
    run.add_argument(
        "--lr",
        nargs="+",
        default=(),
        metavar="ALGORITHM=LR",
        help="no sweep: the ladder of these algorithms at these lrs only",
    )
    detect = sub.add_parser("detect", help="RetinaNet from a study-pretrained conv backbone")
    detect.add_argument("--out", required=True, help="the run directory of `run`")
    detect.add_argument("--algorithm", required=True, help="whose cluttered/conv/seed-0 run")
    detect.add_argument("--datasets", default=None, help="DETECTRON2_DATASETS (shapes set)")
    detect.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    report = sub.add_parser("report", help="tables, PNGs and report.md from the runs")
    report.add_argument("--out", required=True, help="the run directory of `run`")
    report.add_argument("--results", required=True, help="where to write the report")
    report.add_argument("--data", default=None, help="task cache for samples.png")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "detect":
        from .detection import run_detection

        summary = run_detection(args.out, args.algorithm, args.opts, args.datasets)
        print(json.dumps(summary["bbox"]))
        return 0
    if args.command == "report":
        from .report import write_report

        write_report(args.out, args.results, args.data)
        return 0
    try:
        shard = parse_shard(args.shard)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        lrs = {name: float(value) for name, value in (item.split("=") for item in args.lr)}
    except ValueError:
        print(f"error: --lr takes ALGORITHM=LR items, got {args.lr}", file=sys.stderr)
        return 2
    unknown = sorted(set(lrs) - set(LADDER_ALGORITHMS))
    if unknown:
        print(f"error: --lr {unknown}: valid algorithms {LADDER_ALGORITHMS}", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} shard {args.shard}] {message}", flush=True)

    Study(args.out, shard, log, args.data, lrs, steps=args.steps, activation=args.activation).run()
    log(f"shard finished in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
