"""``python -m signsym_det.study``: see :mod:`signsym_det.study.cli`."""

import sys

from .cli import main

sys.argv[0] = "python -m signsym_det.study"  # argparse's usage line, instead of "__main__.py"
sys.exit(main())
