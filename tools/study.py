#!/usr/bin/env python
"""Compare learning rules in a study: ``python -m signsym_det.study`` (see there)."""

import sys

from signsym_det.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
