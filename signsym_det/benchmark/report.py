"""Tables, targets and the machine description of a benchmark run."""

from __future__ import annotations

import math
import os
import platform
import subprocess

import torch

from ..feedback import available_rules


def _every_rule(limit: float, **exceptions: float) -> dict:
    """{rule: limit} for every registered rule, with ``exceptions`` for some."""
    return {rule: exceptions.get(rule, limit) for rule in available_rules()}


_TRAIN_TIME = _every_rule(1.05, brsf=1.10)
#: Ratio-to-stock targets checked on CPU: (section, metric) -> {variant: largest ratio}.
TARGETS = {
    ("train", "time"): _TRAIN_TIME,
    # The same target, estimated as 1 + (B - B_bp) / stock iteration (see .feedback_cost).
    ("feedback", "time_estimate"): _TRAIN_TIME,
    ("train", "peak_memory"): _every_rule(1.05),
    # Informative: the memory a step adds on top of the state between steps, which is all that
    # the mechanism itself (rather than a rule's own tensors) could change.
    ("train", "step_memory"): _every_rule(1.05),
    ("inference", "time"): _every_rule(1.02),
}


def table(header: list[str], rows: list[list], title: str = "") -> str:
    """A plain-text table: columns right-aligned except the first."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title] if title else []
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}"
    return str(value)


def check_targets(section: str, metric: str, label: str, ratios: dict, notes=None) -> list[dict]:
    """One pass/fail record per variant that has a target for (section, metric), in the order
    of ``ratios``."""
    records, limits = [], TARGETS.get((section, metric), {})
    for variant, ratio in ratios.items():
        if variant not in limits:
            continue
        limit = limits[variant]
        records.append(
            {
                "what": f"{label} {metric.replace('_', ' ')}",
                "variant": variant,
                "ratio": ratio,
                "limit": limit,
                "passed": bool(ratio <= limit),
                "note": (notes or {}).get(variant, ""),
            }
        )
    return records


def target_lines(records: list[dict]) -> str:
    """``PASS/FAIL  what  variant  ratio <= limit  (note)`` per record."""
    lines = []
    for r in records:
        verdict = "PASS" if r["passed"] else "FAIL"
        note = f"  ({r['note']})" if r["note"] else ""
        lines.append(
            f"{verdict}  {r['what']:<34} {r['variant']:<14} {r['ratio']:.3f} <= {r['limit']:.2f}"
            f"{note}"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's answer)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where unknown)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
    }
    try:
        import detectron2

        info["detectron2"] = getattr(detectron2, "__version__", "unknown")
    except ImportError:  # pragma: no cover
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(__file__),
        ).stdout.strip()
    except OSError:  # pragma: no cover
        pass
    return info
