#!/usr/bin/env python
"""Train or evaluate a rule-swapped detector: ``python -m signsym_det.train_net`` (see there)."""

import sys

from signsym_det.train_net import main

if __name__ == "__main__":
    sys.exit(main())
