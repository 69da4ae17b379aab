#!/usr/bin/env python
"""Convert a pretrained ResNet checkpoint to a detectron2 backbone file: ``python -m
signsym_det.convert_pretrained`` (see there)."""

import sys

from signsym_det.convert_pretrained import main

if __name__ == "__main__":
    sys.exit(main())
