#!/usr/bin/env python
"""Train, evaluate and draw the shapes demo: ``python -m signsym_det.demo`` (see there)."""

import sys

from signsym_det.demo import main

if __name__ == "__main__":
    sys.exit(main())
