"""Generate the synthetic shapes detection dataset (COCO format) into a directory.

Example: ``python -m signsym_det.make_dataset --out datasets/shapes --num-train 1000``
(``tools/make_dataset.py`` is the same).
Refuses to write into an existing directory that is neither empty nor a generated dataset.
"""

from __future__ import annotations

import argparse
import sys
import time

from .data.shapes import generate_detection_dataset, save_preview


def dataset_parser(description, *, num_train, num_val, image_size) -> argparse.ArgumentParser:
    """The options of a dataset generator (--out, --seed, --num-train, --num-val,
    --image-size), with the generator's defaults."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=num_train)
    parser.add_argument("--num-val", type=int, default=num_val)
    parser.add_argument("--image-size", type=int, default=image_size)
    return parser


def generate(generator, args):
    """``generator(args.out, seed=..., num_train=..., num_val=..., image_size=...)``: its
    summary, or None once the refusal (an existing foreign directory, bad sizes) is printed."""
    try:
        return generator(
            args.out,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
        )
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = dataset_parser(__doc__.splitlines()[0], num_train=1000, num_val=200, image_size=128)
    parser.add_argument("--preview", metavar="PNG", help="also save a mosaic of train images")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    s = generate(generate_detection_dataset, args)
    if s is None:
        return 2
    if args.preview:
        save_preview(s["root"], args.preview)
    print(
        f"shapes dataset in {s['root']}: train {s['num_train']} images / "
        f"{s['num_train_objects']} objects, val {s['num_val']} images / "
        f"{s['num_val_objects']} objects, {len(s['classes'])} classes, seed {s['seed']}, "
        f"{s['image_size']}px, {time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
