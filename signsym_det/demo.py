"""The main job: train a sign-symmetry RetinaNet R18-FPN from scratch on the embedded
shapes set (CPU, minutes; detectron2's log line every 20 iterations shows the ETA), evaluate
COCO box AP with detectron2's COCOEvaluator, write the AP table, predicted boxes and training
curves to the output directory and end with a summary naming those files.

    python -m signsym_det.demo [--config-file CFG] [--output-dir DIR] [--fresh] [KEY VALUE ...]

A finished run in DIR is resumed (re-evaluated, redrawn); --fresh moves it aside first.
(``tools/demo.py`` is the same.) The default config is the packaged
Shapes-Demo/retinanet_R_18_FPN_sign_symmetry_quick.yaml (AdamW, 1500 iterations of 4 images);
``--config-file`` with Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml is the longer SGD run.
"""

import argparse
import os
import sys
import time

from detectron2.engine import default_setup
from detectron2.utils.logger import setup_logger

from .engine import FeedbackTrainer, setup_cfg
from .model_zoo import get_config_file
from .utils.plots import plot_training_curves
from .utils.predictions import draw_predictions
from .utils.results import ap_table

DEFAULT_CONFIG = "Shapes-Demo/retinanet_R_18_FPN_sign_symmetry_quick.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=get_config_file(DEFAULT_CONFIG))
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument("--fresh", action="store_true", help="move a previous run aside")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()  # the whole demo: dataset generation and evaluation too
    if args.fresh and os.path.isdir(args.output_dir):
        aside = f"{args.output_dir.rstrip('/')}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(args.output_dir, aside)
        print(f"previous run moved to {aside}")
    cfg = setup_cfg(args.config_file, ["OUTPUT_DIR", args.output_dir, *args.opts])
    default_setup(cfg, args)
    logger = setup_logger(name="signsym_det")
    logger.info(plan(cfg))
    trainer = FeedbackTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    # the final COCOEvaluator run of the EvalHook (DefaultTrainer keeps its results)
    results = getattr(trainer, "_last_eval_results", None) or FeedbackTrainer.test(
        cfg, trainer.model
    )
    if "bbox" in results:  # detectron2 unwraps the results of a single test set
        results = {cfg.DATASETS.TEST[0]: results}
    minutes = (time.perf_counter() - start) / 60
    table = ap_table(results, title=f"COCO box AP, {cfg.MODEL.FEEDBACK.RULE}, {minutes:.1f} min")
    with open(os.path.join(cfg.OUTPUT_DIR, "results.md"), "w") as f:
        f.write(table + "\n")
    curves = plot_training_curves(
        os.path.join(cfg.OUTPUT_DIR, "metrics.json"),
        os.path.join(cfg.OUTPUT_DIR, "training_curves.png"),
        title=f"RetinaNet R18-FPN, {cfg.MODEL.FEEDBACK.RULE}",
    )
    boxes = draw_predictions(
        cfg, trainer.model, cfg.DATASETS.TEST[0], os.path.join(cfg.OUTPUT_DIR, "predictions.png")
    )
    logger.info("\n" + table)
    minutes = (time.perf_counter() - start) / 60
    print(summary(table, minutes, cfg.SOLVER.MAX_ITER, cfg.OUTPUT_DIR, curves, boxes))


def plan(cfg) -> str:
    """What the demo is about to train, and where its progress shows."""
    return (
        f"demo: RetinaNet R18-FPN, rule {cfg.MODEL.FEEDBACK.RULE}, from scratch: "
        f"{cfg.SOLVER.MAX_ITER} iterations of {cfg.SOLVER.IMS_PER_BATCH} images at "
        f"{max(cfg.INPUT.MIN_SIZE_TRAIN)} px ({cfg.SOLVER.OPTIMIZER}, lr {cfg.SOLVER.BASE_LR}, "
        f"{cfg.SOLVER.LR_SCHEDULER_NAME}), then COCO evaluation on {cfg.DATASETS.TEST[0]}; "
        "the log line every 20 iterations shows the ETA"
    )


def summary(table: str, minutes: float, iterations: int, output_dir: str, curves, boxes) -> str:
    """The closing message: the AP table, the time taken (the whole demo) and the files to
    open."""
    files = [
        (os.path.join(output_dir, "results.md"), "COCO box AP, overall and per class"),
        (boxes, "predicted boxes on validation images"),
        (curves, "losses and B-vs-W / gradient alignment angles over training"),
    ]
    width = max(len(path) for path, _ in files)
    lines = [f"  {path.ljust(width)}  {what}" for path, what in files]
    done = f"demo done: {iterations} iterations, {minutes:.1f} min in all. Open:"
    return "\n".join(["", table, "", done, *lines])


if __name__ == "__main__":
    sys.exit(main())
