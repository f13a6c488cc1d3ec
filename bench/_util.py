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


def summary(samples: list[float], scale: float = 1.0, unit: str = "s") -> str:
    s = sorted(x * scale for x in samples)
    return f"min {s[0]:.4g}{unit}  median {statistics.median(s):.4g}{unit}  max {s[-1]:.4g}{unit}"


def emit_summary(name: str, rows: list[dict]) -> None:
    """Last line of a bench: machine-readable figures that bench/run_all.py tabulates.

    Each row: {"metric", "median", "min", "max", "unit", "reference", "ratio", "target"} (omit what
    does not apply)."""
    import json

    print("BENCH_JSON " + json.dumps({"bench": name, "rows": rows}))
