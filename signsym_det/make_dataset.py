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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--preview", metavar="PNG", help="also save a mosaic of train images")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        s = generate_detection_dataset(
            args.out,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
        )
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
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
