"""``python -m signsym_det.pretrain_hebbian`` (= tools/pretrain_hebbian.py): learn a layer
WITHOUT labels by Krotov & Hopfield's rule (signsym_det.hebbian) on detectron2's engine.

Targets:

* ``hidden``: the wide hidden layer of a classifier (Krotov & Hopfield 2019): an
  ``nn.Linear(3 * S * S, units, bias=False)`` on flattened S x S images (default 2000 units,
  S = 32); writes OUTPUT_DIR/model_final.pth (``model``: ``{"weight"}``) and filters.png
  (the first ``--grid-units`` units as RGB images).
* ``stem``: the 7x7 stem conv (64 filters, stride 2, padding 3, no bias) of a detectron2
  ResNet, the patches of every image being the samples; also writes
  OUTPUT_DIR/stem_detectron2.pth, which ``MODEL.WEIGHTS`` loads (see engine/hebbian_stem.py),
  and filters.png. Only the stem: no deeper layer is learned (greedily or otherwise).

Images: every image file under ``--data`` (under ``--data``/train if that exists: never the
val images), read without labels and decoded once (engine/hebbian_data.py; ``--image-cache``
keeps the decoded images in a file for the next run). ``--make-dataset classification``
or ``detection`` generates the embedded shapes set at ``--data`` first if absent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from detectron2.utils.logger import setup_logger
from torch import nn

from .engine.latest_checkpoint import add_resume_argument, resume_path
from .hebbian import PATCH_NORMS, Conv2dHebbianLearner, LinearHebbianLearner
from .hebbian.filters import save_filter_grid

TARGETS = ("hidden", "stem")
DEFAULTS = {"hidden": {"units": 2000, "image_size": 32}, "stem": {"units": 64, "image_size": 128}}
EMBEDDED_SETS = ("classification", "detection")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Learn a classifier's hidden layer or a ResNet stem without labels "
        "(Krotov & Hopfield's competing hidden units).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--data", required=True, help="image folder (its train/ if it has one)")
    p.add_argument(
        "--make-dataset",
        choices=EMBEDDED_SETS,
        help="generate this embedded shapes set at --data if absent",
    )
    p.add_argument("--output-dir", default="output/hebbian")
    p.add_argument("--units", type=int, help="hidden units / stem filters (default 2000 / 64)")
    p.add_argument("--image-size", type=int, help="square input side (default 32 / 128)")
    p.add_argument("--max-iter", type=int, default=1000, help="eps decays to 0 over these")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eps0", type=float, default=0.02, help="initial learning rate eps")
    p.add_argument("--p", type=float, default=2.0, help="Lebesgue norm of the weights")
    p.add_argument("--k", type=int, default=2, help="rank of the anti-Hebbian unit")
    p.add_argument("--delta", type=float, default=0.4, help="anti-Hebbian strength")
    p.add_argument("--max-patches", type=int, default=4096, help="stem: patches per step")
    p.add_argument(
        "--patch-norm",
        default="none",
        choices=[str(n).lower() for n in PATCH_NORMS],
        help="stem: per-patch normalisation",
    )
    p.add_argument(
        "--image-cache",
        help="file of the decoded images (uint8): read if it matches the images, else written",
    )
    p.add_argument("--seed", type=int, default=0, help="init, data order, patch draws")
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_resume_argument(p)
    p.add_argument("--log-period", type=int, default=20, help="iterations")
    p.add_argument("--checkpoint-period", type=int, default=100, help="iterations")
    p.add_argument("--window", type=int, default=20, help="iterations of units_won_frac")
    p.add_argument("--grid-units", type=int, default=100, help="hidden: units in filters.png")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for key, value in DEFAULTS[args.target].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.patch_norm = None if args.patch_norm == "none" else args.patch_norm
    return args


def image_root(args) -> Path:
    """The folder whose images are learned from, generating an embedded set first if asked."""
    root = Path(args.data)
    if args.make_dataset == "classification":
        from .data.classification import ensure_classification_dataset

        ensure_classification_dataset(root)
    elif args.make_dataset == "detection":
        from .data.register import ensure_shapes_dataset

        ensure_shapes_dataset(root)
    return (root / "train" if (root / "train").is_dir() else root).absolute()


INIT = "normal(0, 1)"


def initial_weight(shape, seed: int) -> torch.Tensor:
    """W drawn N(0, 1) from ``seed``, as Krotov & Hopfield. Rows start far above unit p-norm;
    a winning row shrinks towards it, which lets other units win: started AT unit norm, a
    few units aligned with the mean image win every sample (3 % of 400 units in our runs)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def unit_rows(weight: torch.Tensor, p: float) -> torch.Tensor:
    """``weight`` with each unit's weights (dim 0 rows, flattened) scaled to unit p-norm:
    the norm the rule drives them to. The frozen random controls use :func:`initial_weight`
    scaled so."""
    norms = weight.flatten(1).norm(p=p, dim=1)
    return weight / norms.view(-1, *[1] * (weight.dim() - 1))


def build_learner(args):
    """The layer (:func:`initial_weight` from ``--seed``) and its learner."""
    from .engine.hebbian_stem import stem_conv

    if args.target == "hidden":
        layer = nn.Linear(3 * args.image_size**2, args.units, bias=False)
    else:
        layer = stem_conv(args.units)
    with torch.no_grad():
        layer.weight.copy_(initial_weight(layer.weight.shape, args.seed))
    layer.to(args.device)
    rule = dict(eps0=args.eps0, p=args.p, k=args.k, delta=args.delta)
    if args.target == "hidden":
        return LinearHebbianLearner(layer, args.max_iter, **rule)
    patches = torch.Generator(args.device).manual_seed(args.seed)
    return Conv2dHebbianLearner(
        layer,
        args.max_iter,
        max_patches=args.max_patches,
        generator=patches,
        patch_norm=args.patch_norm,
        **rule,
    )


def filters_of(args, weight: torch.Tensor) -> torch.Tensor:
    """(n, 3, h, w) RGB views of the learned weight for the PNG grid."""
    if args.target == "hidden":
        return weight[: args.grid_units].reshape(-1, 3, args.image_size, args.image_size)
    return weight


def main(argv=None) -> dict:
    """Train (or resume) and write the outputs; returns their paths."""
    args = parse_args(argv)
    path = resume_path(args)
    setup_logger(args.output_dir, name="detectron2")
    log = setup_logger(args.output_dir, name="signsym_det")
    from .engine.hebbian import HebbianPretrainer
    from .engine.hebbian_data import UnlabelledImages

    dataset = UnlabelledImages(image_root(args), args.image_size, args.image_cache)
    learner = build_learner(args)
    record = {
        "target": args.target,
        "units": args.units,
        "image_size": args.image_size,
        "data": str(dataset.root),
        "images": len(dataset),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "init": INIT,
    }
    trainer = HebbianPretrainer(
        learner,
        dataset,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        seed=args.seed,
        record=record,
        workers=args.workers,
        log_period=args.log_period,
        checkpoint_period=args.checkpoint_period,
        window=args.window,
        tensorboard=args.tensorboard,
    )
    if path:
        trainer.resume(path)
    elif args.resume == "auto":
        log.info("nothing to resume: starting from scratch")
    layer = trainer.train()
    out = Path(args.output_dir)
    outputs = {"checkpoint": str(out / "model_final.pth")}
    title = f"Krotov-Hopfield {args.target}: p={args.p} k={args.k} delta={args.delta}"
    outputs["filters"] = save_filter_grid(
        filters_of(args, layer.weight.detach()), out / "filters.png", title
    )
    if args.target == "stem":
        from .engine.hebbian_stem import save_stem_checkpoint

        outputs["stem"] = save_stem_checkpoint(learner, record, out / "stem_detectron2.pth")
    for name, written in outputs.items():
        log.info(f"wrote {name}: {written}")
    return outputs


if __name__ == "__main__":
    main()
