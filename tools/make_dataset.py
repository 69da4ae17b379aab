#!/usr/bin/env python
"""Generate the shapes detection dataset: ``python -m signsym_det.make_dataset`` (see there)."""

import sys

from signsym_det.make_dataset import main

if __name__ == "__main__":
    sys.exit(main())
