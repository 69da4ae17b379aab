"""``python -m signsym_det.benchmark``: see :mod:`signsym_det.benchmark.cli`."""

import sys

from .cli import main

sys.argv[0] = "python -m signsym_det.benchmark"  # argparse's usage line, instead of "__main__.py"
sys.exit(main())
