#!/usr/bin/env python
"""Cost of each learning rule next to stock backprop: ``python -m signsym_det.benchmark``."""

import sys

from signsym_det.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
