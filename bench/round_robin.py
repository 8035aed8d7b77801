"""Round-robin timing: one call of every candidate in turn, `rounds` times, so that a shared, noisy
machine slows them alike (pytest-benchmark times one candidate after the other, and the machine
drifts between them). The ratios of bench/RESULTS.md that compare candidates come from here."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def round_robin(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """The median seconds per call of each of `fns`, after `warmup` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}
