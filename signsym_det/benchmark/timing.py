"""Interleaved timing: variants run in turn (A B C A B C ...) in one process.

A shared machine drifts in speed; interleaving exposes every variant to the same drift, so
ratios of medians stay meaningful when absolute times do not. The starting variant rotates
each round, so none always runs right after the same neighbour.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


#: Clocks: "wall" (elapsed time) or "cpu" (CPU time of this process, all its threads: less
#: disturbed by other processes' load, but it counts the spinning of idle worker threads).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_call(
    function: Callable[[], object], sync: Callable[[], None], clock: str = "wall"
) -> float:
    """Seconds of one call on ``clock``, the device's queue drained before and after."""
    now = CLOCKS[clock]
    sync()
    start = now()
    function()
    sync()
    return now() - start


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    on_round: Callable[[int, dict], None] | None = None,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``warmup`` uncounted rounds, then ``repeats`` rounds.

    Each round calls every variant once, starting from a rotating position.
    ``on_round(round_index, times_so_far)`` is called after each counted round.
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = time_call(variants[name], sync, clock)
            if round_index >= warmup:
                times[name].append(seconds)
        if round_index >= warmup and on_round is not None:
            on_round(round_index - warmup, times)
    return times


def median(values) -> float:
    """The median (nan for no values)."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratios_to(baseline: str, medians: Mapping[str, float]) -> dict[str, float]:
    """Each median divided by the baseline's."""
    base = medians[baseline]
    return {name: value / base for name, value in medians.items()}


def paired_ratio(times: Mapping[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of time[name] / time[baseline] (same round, so the same drift)."""
    return median(a / b for a, b in zip(times[name], times[baseline]))
