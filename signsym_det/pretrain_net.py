"""``python -m signsym_det.pretrain_net`` (= tools/pretrain_net.py): arguments, options, main().

Recipes live in options files (``configs/ImageNet/*.args``) read with ``@FILE``: one or more
options per line, ``#`` starts a comment. Later options win, so
``@configs/ImageNet/R-18.args --lr 0.2`` overrides the file's lr. (Not YAML: every
``configs/**.yaml`` is a detectron2 config.)
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex

import torch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .classification.distributed import init_distributed
from .classification.model import ARCHS, CONVNETS, algorithms, check_algorithm
from .classification.optim import OPTIMIZERS, SCHEDULES
from .engine.distributed import share_cpu_threads
from .engine.latest_checkpoint import add_resume_argument, resume_path
from .feedback import available_rules, parse_rule
from .targetprop import ACTIVATIONS


class _Parser(argparse.ArgumentParser):
    def convert_arg_line_to_args(self, arg_line):
        return shlex.split(arg_line, comments=True)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        description="Pretrain a classifier on an ImageFolder dataset: a rule-swapped ResNet, or "
        "Bartunov et al.'s layered convnets by a rule, DFA or target propagation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        fromfile_prefix_chars="@",
    )
    p.add_argument("--data", help="ImageFolder root with train/ and val/ (ImageNet layout)")
    p.add_argument(
        "--make-dataset",
        action="store_true",
        help="generate the embedded shapes classification set at --data if absent",
    )
    p.add_argument("--output-dir", default="output/pretrain")
    p.add_argument("--arch", default="resnet18", choices=ARCHS)
    p.add_argument(
        "--algorithm",
        default=None,
        choices=algorithms(),
        help="a feedback rule (= --rule) or, for convnet/convnet_lc, dfa, dtp, sdtp, ao_sdtp; "
        "default: --rule",
    )
    p.add_argument(
        "--rule", default=None, help=f"one of {available_rules()} (default: sign_symmetry)"
    )
    p.add_argument("--scale", default=None, help="feedback scale (default: the rule's)")
    p.add_argument(
        "--classifier-rule",
        default="bp",
        help="rule of the last layer fc; bp/none = plain backprop (Xiao et al.)",
    )
    p.add_argument("--classifier-scale", default=None)
    p.add_argument("--seed", type=int, default=0, help="init, feedback tensors, data order")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--max-iter", type=int, default=0, help="overrides --epochs if > 0")
    p.add_argument("--batch-size", type=int, default=256, help="total over all processes")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--classifier-lr", type=float, default=None, help="default: --lr")
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=OPTIMIZERS,
        help="sgd: the standard recipe; adamw: for short CPU runs (no Batch Manhattan)",
    )
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", default="step", choices=SCHEDULES)
    p.add_argument(
        "--lr-steps",
        type=float,
        nargs="*",
        default=[30, 60],
        help="epochs at which the step schedule multiplies lr by --gamma",
    )
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument(
        "--batch-manhattan",
        action="store_true",
        help="Batch Manhattan (SGD on sign(grad)) for all layers but fc",
    )
    p.add_argument("--classifier-batch-manhattan", action="store_true")
    p.add_argument(
        "--weight-norm-constraint",
        action="store_true",
        help="after every step, rescale the weights of fa/frsf layers to their initial "
        "Frobenius norm (Moskovitz et al. 2018); the norms are saved with the optimizer",
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--min-crop-scale", type=float, default=0.08)
    p.add_argument("--workers", type=int, default=8, help="data loading processes per GPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    add_resume_argument(p)
    p.add_argument("--eval-only", action="store_true", help="evaluate the --resume checkpoint")
    p.add_argument("--log-period", type=int, default=20, help="iterations")
    p.add_argument(
        "--checkpoint-period", type=int, default=0, help="iterations; 0 = at the end of every epoch"
    )
    p.add_argument("--eval-period", type=int, default=1, help="epochs; 0 = only at the end")
    p.add_argument(
        "--alignment-period",
        type=int,
        default=100,
        help="iterations between angle(B, W) logs; 0 = never",
    )
    p.add_argument(
        "--gradient-alignment-period",
        type=int,
        default=0,
        help="iterations between rule-vs-backprop input-gradient angles; 0 = never",
    )
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    layered = p.add_argument_group("convnet / convnet_lc (Bartunov et al.'s layered networks)")
    layered.add_argument("--channels", type=int, nargs="+", default=[32, 64], help="conv widths")
    layered.add_argument("--kernel-size", type=int, default=5)
    layered.add_argument("--stride", type=int, default=2)
    layered.add_argument("--activation", default="tanh", choices=tuple(ACTIVATIONS))
    layered.add_argument(
        "--aux-outputs",
        type=int,
        default=None,
        help="auxiliary output units (default: as many as classes for ao_sdtp, else 0)",
    )
    layered.add_argument(
        "--update-angle-period",
        type=int,
        default=100,
        help="iterations between angle(algorithm's weight update, backprop's) logs; 0 = never",
    )
    layered.add_argument(
        "--dfa-scale", type=float, default=None, help="DFA: std of B (1/sqrt(classes))"
    )
    layered.add_argument("--beta", type=float, default=0.5, help="DTP: output target step")
    layered.add_argument(
        "--inverse-lr",
        type=float,
        nargs="+",
        default=[1e-3],
        help="DTP: Adam lr of the inverses (one value, or one per used inverse)",
    )
    layered.add_argument(
        "--inverse-noise",
        type=float,
        nargs="+",
        default=[0.1],
        help="DTP: std of the inverse loss's input noise (one value or one per inverse)",
    )
    layered.add_argument(
        "--inverse-iterations",
        type=int,
        nargs="+",
        default=[1],
        help="DTP: inverse updates per iteration (one value or one per inverse)",
    )
    return p


def _resolve_algorithm(parser, args) -> None:
    """Set ``args.algorithm`` (canonical) and ``args.rule`` (the rule; bp for the others)."""
    rule = parse_rule(args.rule) if args.rule is not None else None
    algorithm = args.algorithm or rule or "sign_symmetry"
    try:
        algorithm = check_algorithm(algorithm, args.arch)
    except ValueError as error:
        parser.error(str(error))
    is_rule = algorithm in available_rules()
    if args.rule is not None and (not is_rule or rule != algorithm):
        parser.error(f"--rule {args.rule} contradicts --algorithm {args.algorithm}")
    args.algorithm, args.rule = algorithm, algorithm if is_rule else "bp"


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("--data is required")
    _resolve_algorithm(parser, args)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.make_dataset:
        from .data.classification import ensure_classification_dataset

        summary = ensure_classification_dataset(args.data)
        state = "generated" if summary["generated"] else "found"
        print(f"[pretrain] {state} the shapes classification set in {summary['root']}")
    path = resume_path(args, starting=not args.eval_only)
    init_distributed(args.device)
    share_cpu_threads(args.device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    for name in ("detectron2", "signsym_det"):
        setup_logger(args.output_dir, distributed_rank=comm.get_rank(), name=name)
    if args.arch in CONVNETS:
        from .engine.targetprop import LayeredPretrainer as Trainer
    else:
        from .engine.pretrain import Pretrainer as Trainer

    trainer = Trainer(args)
    if path:
        trainer.resume(path)
    elif args.resume == "auto":
        logging.getLogger(__name__).info("nothing to resume: starting from scratch")
    if args.eval_only:
        if not path:
            raise SystemExit("--eval-only needs --resume PATH")
        return trainer.validate()
    return trainer.train()


if __name__ == "__main__":
    main()
