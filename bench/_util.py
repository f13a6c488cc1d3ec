"""Small helpers shared by the bench scripts: repeat, summarise, describe the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu(s), Python {platform.python_version()}, {platform.system()}"


def measure(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Wall and thread-CPU seconds of each function per round, the order reversed every other round so
    neither side always runs first (warm caches, a neighbour's burst): ``{name: {"wall": [...], "cpu": [...]}}``."""
    out: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    items = list(fns.items())
    for r in range(rounds):
        for name, fn in items if r % 2 == 0 else reversed(items):
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            out[name]["cpu"].append(time.thread_time() - c0)
            out[name]["wall"].append(time.perf_counter() - w0)
    return out


def summary(samples: list[float], scale: float = 1.0, unit: str = "s") -> str:
    s = sorted(x * scale for x in samples)
    return f"min {s[0]:.4g}{unit}  median {statistics.median(s):.4g}{unit}  max {s[-1]:.4g}{unit}"


def emit_summary(name: str, rows: list[dict]) -> None:
    """Last line of a bench: machine-readable figures that bench/run_all.py tabulates.

    Each row: {"metric", "median", "min", "max", "unit", "reference", "ratio", "target"} (omit what
    does not apply)."""
    import json

    print("BENCH_JSON " + json.dumps({"bench": name, "rows": rows}))
