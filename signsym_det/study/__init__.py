"""Rule-comparison studies: one ordinary detectron2 training job per (variant, seed)."""

from .report import collect, write_report  # noqa: F401
from .runs import Run, parse_variant, plan_runs, run_all, shard  # noqa: F401
