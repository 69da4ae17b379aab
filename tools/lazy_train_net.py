#!/usr/bin/env python
"""Train or evaluate a LazyConfig detector: ``python -m signsym_det.lazy_train_net`` (see there)."""

import sys

from signsym_det.lazy_train_net import main

if __name__ == "__main__":
    sys.exit(main())
