"""Generate the embedded shapes classification set (ImageFolder layout) into a directory.

Example: ``python -m signsym_det.make_classification_dataset --out datasets/shapes_classification``
(``tools/make_classification_dataset.py`` is the same).
"""

from __future__ import annotations

import sys
import time

from .data.classification import generate_classification_dataset
from .make_dataset import dataset_parser, generate


def main(argv=None) -> int:
    parser = dataset_parser(__doc__.splitlines()[0], num_train=2400, num_val=600, image_size=64)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    s = generate(generate_classification_dataset, args)
    if s is None:
        return 2
    print(
        f"shapes classification set in {s['root']}: {s['counts']['train']} train / "
        f"{s['counts']['val']} val images, {len(s['classes'])} classes, "
        f"{time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
