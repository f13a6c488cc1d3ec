"""Hundreds of runs in one process leave nothing behind per run.

The engine half of the long-run bar (bench/long_run.py measures the real demo):
with a cache budget small enough that every run evicts, repeated runs with a
varying seed -- events to a subscriber and a per-run listener, progress with
previews, display data -- must not grow the Python heap, the number of tracked
objects or the cache beyond its budget.  One object kept per run would show as
hundreds of blocks here; the measured noise is a handful.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nodegraph import Executor, Float, Graph, In, Int, NodeResult, Out, Registry, node
from nodegraph.events import Event

BUDGET = 64 * 1024  # a few runs' results: every run evicts once warm


@node("lr.make", inputs=[Int("seed", 0, min=0, max=10**9), Int("size", 512)], outputs=[Out("ARRAY", "ARRAY")])
def make(ctx: Any, seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).random(size)


@node("lr.scale", inputs=[In("x", "ARRAY"), Float("k", 2.0)], outputs=[Out("ARRAY", "ARRAY")])
def scale(ctx: Any, x: np.ndarray, k: float) -> np.ndarray:
    for i in range(4):
        ctx.progress(i + 1, 4, np.zeros((8, 8, 3), np.uint8))
    return x * k


@node("lr.show", inputs=[In("x", "ARRAY")], output_node=True)
def show(ctx: Any, x: np.ndarray) -> NodeResult:
    return NodeResult(ui={"sum": float(x.sum()), "text": f"{x.mean():.3f}"})


def _setup(tmp_path: Path) -> tuple[Executor, Graph, list[int]]:
    reg = Registry()
    reg.types.register_type("ARRAY", "#123456", "numpy array (tests)")
    reg.add_pack("lr", [make, scale, show])
    g = Graph()
    g.add_node("lr.make", id="m")
    g.add_node("lr.scale", id="s")
    g.add_node("lr.show", id="o")
    g.connect("m", "ARRAY", "s", "x")
    g.connect("s", "ARRAY", "o", "x")
    ex = Executor(reg, device="cpu", output_dir=tmp_path, cache_bytes=BUDGET, trim_after_run=False)
    seen = [0]

    def count(_: Event) -> None:
        seen[0] += 1

    ex.subscribe(count)
    return ex, g, seen


def _runs(ex: Executor, g: Graph, start: int, stop: int) -> int:
    peak = 0
    for i in range(start, stop):
        g.set_value("m", "seed", i)
        report = ex.run(g, on_event=lambda e: None)
        report.raise_for_status()
        assert report.executed() == ["m", "s", "o"]
        peak = max(peak, ex.cache.nbytes)
    return peak


def test_repeated_runs_under_constant_eviction_do_not_grow_the_heap(tmp_path: Path) -> None:
    ex, g, seen = _setup(tmp_path)
    _runs(ex, g, 0, 100)  # warm-up: caches of the interpreter, numpy and the registry fill
    gc.collect()
    blocks, objects = sys.getallocatedblocks(), len(gc.get_objects())
    evictions, entries = ex.cache.evictions, len(ex.cache)
    peak = _runs(ex, g, 100, 400)
    gc.collect()
    assert ex.cache.evictions - evictions >= 300  # the cache really was evicting every run
    assert peak <= BUDGET
    assert len(ex.cache) <= entries + 1
    assert len(gc.get_objects()) - objects < 50
    assert sys.getallocatedblocks() - blocks < 100, "something is kept per run"
    assert seen[0] > 400 * 9  # the subscriber did receive every run's events
