"""Cost of each learning rule next to stock detectron2 backprop, measured in ONE process.

Variants: ``stock`` (detectron2's RetinaNet: plain nn.Conv2d, plain autograd; the baseline
of every ratio), ``bp`` (our FeedbackConv2d with B = W: the cost of the mechanism alone) and
each rule. They run interleaved (A B C ... A B C ..., the first rotating) after warm-up,
and every ratio is a ratio of medians. Sections:

* train: RetinaNet training iterations (forward, backward, SGD step as in detectron2's
  SimpleTrainer) on random images with random boxes, and the peak memory of one, in each
  setting of ``--models``: COCO R18-FPN and R50-FPN at --size, R18-FPN on 2 x 192x192, the
  shapes demo's R18-FPN on 8 x 128x128 (``--compile``: backbone and head torch.compile'd);
* inference: the same models in eval mode under no_grad, time per image;
* feedback: what each rule adds to bp's path per iteration, timed alone: making the B of
  every layer whose backward makes one, as an iteration does; its share of a stock iteration
  gives the train time estimate 1 + (B - B_bp) / stock (eager only: skipped with --compile);
* layers: FeedbackConv2d vs nn.Conv2d forward + backward for each conv shape of ResNet-50.

Prints the tables and the pass/fail lines of the targets; writes everything to --json.

    python -m signsym_det.benchmark --quick      # < 3 minutes on 2 CPU cores
    python -m signsym_det.benchmark              # the full run (make bench)
    python -m signsym_det.benchmark --device cuda --amp
    python -m signsym_det.benchmark --compile --models R18-small --sections train

(``tools/benchmark.py`` is the same.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from .. import modeling  # noqa: F401  (registers FeedbackRetinaNet)
from . import detectors, memory, report, run

_TIMING = dict(batch=2, warmup=1)
PRESETS = {
    "quick": dict(_TIMING, models=("R18", "R50"), size=256, repeats=3, inference_repeats=3,
                  feedback_repeats=9, layer_repeats=3),
    "full": dict(_TIMING, models=tuple(detectors.SETTINGS), size=512, repeats=7,
                 inference_repeats=7, feedback_repeats=25, layer_repeats=7),
}  # fmt: skip
SECTIONS = ("train", "inference", "feedback", "layers")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, fast preset (< 3 min)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument(
        "--amp", action="store_true", help="autocast: fp16 + GradScaler on CUDA, bf16 on CPU"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's, = cores)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(detectors.SETTINGS),
        help="detector settings (full: all; quick: R18 R50): R18 / R50 = COCO RetinaNet at "
        "--size and --batch, R18-small = COCO R18 on 2 x 192x192, demo = the shapes demo's "
        "R18 on 8 x 128x128",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile (inductor) the backbone and head of every variant for training",
    )
    parser.add_argument(
        "--rules", nargs="+", default=list(detectors.RULES), choices=list(detectors.RULES)
    )
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--size", type=int, help="image side (preset: quick 256, full 512)")
    parser.add_argument("--batch", type=int, help="images per iteration (preset: 2)")
    parser.add_argument("--repeats", type=int, help="counted training rounds")
    parser.add_argument("--warmup", type=int, help="uncounted rounds first")
    parser.add_argument("--inference-repeats", type=int)
    parser.add_argument("--feedback-repeats", type=int, help="rounds of the feedback section")
    parser.add_argument("--layer-repeats", type=int)
    parser.add_argument("--layer-batch", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed (default); cpu: process CPU time",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json",
        default="output/benchmark/benchmark.json",
        help="where to write the machine-readable results",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides for every variant, e.g. --opts "
        "MODEL.RESNETS.NORM BN MODEL.BACKBONE.FREEZE_AT 0",
    )
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> run.Options:
    preset = PRESETS["quick" if args.quick else "full"]
    given = {k: getattr(args, k) for k in preset if getattr(args, k) is not None}
    if "models" in given:
        given["models"] = tuple(given["models"])
    return run.Options(
        compile=args.compile,
        rules=tuple(args.rules),
        device=args.device,
        amp=args.amp,
        layer_batch=args.layer_batch,
        sections=tuple(args.sections),
        clock=args.clock,
        opts=list(args.opts),
        seed=args.seed,
        **{**preset, **given},
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="torch.meshgrid")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = options_from(args)
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    started = time.time()
    machine = report.machine(options.device)
    header = (
        f"signsym_det benchmark ({'quick' if args.quick else 'full'}): {machine['cpu']}, "
        f"{machine['logical_cpus']} logical CPUs, torch {machine['torch']}, "
        f"{machine['threads']} threads, device {options.device}"
        f"{', AMP' if options.amp else ''}{', compiled' if options.compile else ''}; "
        f"load average at start "
        f"{' '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}\n"
        f"Baseline 'stock' = detectron2's RetinaNet (nn.Conv2d, plain autograd); 'bp' = "
        f"FeedbackConv2d with B = W.\n"
        f"Peak memory: {memory.MEMORY_MEANING[torch.device(options.device).type]}."
    )
    print(header, flush=True)
    results = {"options": options.as_dict(), "machine": machine, "detectors": []}
    tables = []
    if {"train", "inference", "feedback"} & set(options.sections):
        for setting in options.models:
            result = run.detector_section(setting, options)
            results["detectors"].append(result)
            tables.append(run.detector_tables(result, options))
            print("\n" + tables[-1], flush=True)
    if "layers" in options.sections:
        results["layers"] = run.layer_section(options)
        tables.append(run.layer_tables(results["layers"], options))
        print("\n" + tables[-1], flush=True)
    records = run.targets(results)
    results["targets"] = records
    results["seconds"] = time.time() - started
    results["load_average_at_end"] = report.load_average()
    lines = report.target_lines(records)
    if options.device != "cpu" or options.amp:
        lines = "(targets are set for CPU float32; informative here)\n" + lines
    if options.compile:
        lines = (
            "(compiled: the targets hold for the compiled step against compiled stock)\n" + lines
        )
    if any(record["what"].endswith("time estimate") for record in records):
        lines += (
            "\n(time estimate = 1 + (B - B_bp) / stock iteration, from the feedback section: "
            "assumes bp's path costs stock's and B costs in an iteration what it costs alone)"
        )
    footer = (
        f"Targets (ratio to stock):\n{lines}\n"
        f"Took {results['seconds']:.0f} s; load average at end "
        f"{' '.join(f'{x:.2f}' for x in results['load_average_at_end'])}."
    )
    for result in results["detectors"]:
        if "train" in result and not result["train"]["finite_losses"]:
            footer += f"\nWARNING: non-finite training loss in {result['model']}"
    print("\n" + footer, flush=True)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    results["text"] = "\n\n".join([header, *tables, footer])
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"Wrote {os.path.relpath(path)}")
    return 0
