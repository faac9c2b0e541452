"""What the benchmarks share: alternated runs and their medians."""

from __future__ import annotations

import statistics
import time


def alternated_medians(runs: dict, repeats: int) -> dict:
    """{name: median seconds} of `runs` ({name: callable}), each run `repeats` times in alternating order (ABC, then
    CBA: none always runs first or last)."""
    times = {name: [] for name in runs}
    for k in range(repeats):
        for name in (list(runs) if k % 2 == 0 else list(reversed(runs))):
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(v) for name, v in times.items()}
