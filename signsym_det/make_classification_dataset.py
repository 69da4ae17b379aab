"""Generate the embedded shapes classification set (ImageFolder layout) into a directory.

Example: ``python -m signsym_det.make_classification_dataset --out datasets/shapes_classification``
(``tools/make_classification_dataset.py`` is the same).
"""

from __future__ import annotations

import argparse
import sys
import time

from .data.classification import generate_classification_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=2400)
    parser.add_argument("--num-val", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        s = generate_classification_dataset(
            args.out,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
        )
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"shapes classification set in {s['root']}: {s['counts']['train']} train / "
        f"{s['counts']['val']} val images, {len(s['classes'])} classes, "
        f"{time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
