#!/usr/bin/env python
"""Generate the shapes classification set: ``python -m signsym_det.make_classification_dataset``
(see there)."""

import sys

from signsym_det.make_classification_dataset import main

if __name__ == "__main__":
    sys.exit(main())
