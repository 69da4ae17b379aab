"""Train or evaluate a rule-swapped detectron2 detector; detectron2's usual CLI.

python -m signsym_det.train_net --config-file configs/Shapes-Demo/retinanet_R_18_FPN_bp.yaml
python -m signsym_det.train_net --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth
    (also writes the results to OUTPUT_DIR/eval_results.json)
python -m signsym_det.train_net --config-file CFG --num-gpus 8 [--num-machines N
    --machine-rank R --dist-url tcp://HOST:PORT] [--resume] [--overwrite] [KEY VALUE ...]

(``tools/train_net.py`` is the same.) An installed package finds its own configs with
``signsym_det.model_zoo.get_config_file("Shapes-Demo/retinanet_R_18_FPN_bp.yaml")``.
"""

import json
import math
import os
import sys

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import FeedbackCheckpointer
from .checkpoint.io import atomic_write_text
from .engine import FeedbackTrainer, check_output_dir, setup_cfg
from .engine.distributed import share_cpu_threads


def run(args):
    """One process's job (``launch`` starts one per GPU, or ``--num-gpus`` gloo processes on a
    machine without CUDA): train, or evaluate with --eval-only."""
    cfg = setup_cfg(args.config_file, args.opts)
    if not args.eval_only:
        check_output_dir(cfg, resume=args.resume, overwrite=args.overwrite)
    default_setup(cfg, args)
    share_cpu_threads(cfg.MODEL.DEVICE, comm.get_local_size())
    # our loggers (e.g. the checkpointer's pretrained-weights checks) beside detectron2's
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="signsym_det")
    if args.eval_only:
        model = FeedbackTrainer.build_model(cfg)
        FeedbackCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, check_backbone=cfg.MODEL.FEEDBACK.CHECK_BACKBONE
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = FeedbackTrainer.test(cfg, model)
        if comm.is_main_process():
            write_eval_results(results, cfg.OUTPUT_DIR)
        return results
    trainer = FeedbackTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


#: What ``--eval-only`` writes into OUTPUT_DIR: the evaluators' results as JSON.
EVAL_RESULTS = "eval_results.json"


def _plain(value):
    """Evaluator results as JSON values: nested dicts of floats, NaN (nothing detected) as
    null; anything that is no number (another evaluator's extras) as its str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return None if math.isnan(value) else value


def write_eval_results(results, output_dir) -> str:
    """``OUTPUT_DIR/eval_results.json``: ``{dataset: {task: {metric: value}}}`` (detectron2
    drops the dataset level when there is one test set)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, EVAL_RESULTS)
    return atomic_write_text(json.dumps(_plain(results), indent=1), path)


def parse_args(argv=None):
    """detectron2's ``default_argument_parser`` plus ``--overwrite``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite", action="store_true", help="train anew into an output directory holding a run"
    )
    return parser.parse_args(argv)


def main(argv=None, job=run) -> None:
    """Parse ``argv`` (default: the command line) and ``launch`` ``job(args)`` (:func:`run`)."""
    args = parse_args(argv)
    launch(
        job,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    sys.exit(main())
