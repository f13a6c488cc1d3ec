"""Planning cost of subgraphs (issue 15).

Run: .venv/bin/python bench/subgraph_plan.py

A chain of N primitive nodes is planned (validate + order + cache keys) twice in the same
run: flat, and wrapped into N/50 subgraph instances of 50 nodes each (every block its own
definition, instances chained through their interface).  Sizes 1,250 / 2,500 / 5,000
show whether the cost is linear: the number of Python function calls per node (counted, so
immune to the load of a shared machine) must stay constant, the per-node time should stay
roughly flat, and the wrapped/flat ratio is the price of flattening.  Also checks that both give identical cache
keys (wrapping never invalidates the cache).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import emit_summary, machine, summary  # noqa: E402
from bench.engine import chain  # noqa: E402 - the same chain the engine bench plans flat
from nodegraph import Graph, Registry, build_plan  # noqa: E402
from nodegraph.subgraph import extract  # noqa: E402
from nodes import primitives  # noqa: E402

BLOCK = 50


def wrapped(n: int, registry: Registry) -> Graph:
    """The same chain with its middle wrapped into blocks of ``BLOCK`` nodes, one definition each."""
    g = chain(n)
    inner = [f"n{i}" for i in range(1, n - 1)]
    for k in range(0, len(inner), BLOCK):
        extract(g, registry, inner[k:k + BLOCK], f"block{k // BLOCK}", instance_id=f"b{k // BLOCK}")
    return g


def interleaved(a: Callable[[], object], b: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately (after one warm-up each), so load from other processes on
    this shared machine hits both sides alike and their ratio stays meaningful."""
    a(), b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def calls_per_node(graph: Graph, registry: Registry, n: int) -> float:
    """Python function calls per node of one planning pass: a count, immune to machine load, that
    stays constant as the graph grows exactly when the work is linear."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    build_plan(graph, registry)
    prof.disable()
    return pstats.Stats(prof).total_calls / n  # type: ignore[attr-defined]


def main() -> None:
    reg = Registry()
    primitives.register(reg)
    print(f"machine: {machine()} (shared with other engineers' jobs: figures are noisy; compare ratios)")
    rows = []
    per_node: dict[str, list[float]] = {"flat": [], "wrapped": [], "wrapped_min": []}
    for n in (1_250, 2_500, 5_000):
        flat, wrap = chain(n), wrapped(n, reg)
        instances = sum(1 for node in wrap if node.type.startswith("subgraph:"))
        keys_flat = build_plan(flat, reg).keys
        keys_wrap = build_plan(wrap, reg).keys
        same = sorted(keys_flat.values()) == sorted(keys_wrap.values())
        t_flat, t_wrap = interleaved(lambda flat=flat: build_plan(flat, reg),
                                     lambda wrap=wrap: build_plan(wrap, reg), repeat=15)
        mf, mw = statistics.median(t_flat), statistics.median(t_wrap)
        per_node["flat"].append(mf / n * 1e6)
        per_node["wrapped"].append(mw / n * 1e6)
        per_node["wrapped_min"].append(min(t_wrap) / n * 1e6)
        cf, cw = calls_per_node(flat, reg, n), calls_per_node(wrap, reg, n)
        per_node.setdefault("calls", []).append(cw)
        print(f"\n{n} nodes ({instances} subgraph instances when wrapped); identical cache keys: {same}; "
              f"Python calls per node: flat {cf:.1f}, wrapped {cw:.1f}")
        print(f"   flat    : {summary(t_flat, 1e3, 'ms')}  ({mf / n * 1e6:.1f} us/node)")
        print(f"   wrapped : {summary(t_wrap, 1e3, 'ms')}  ({mw / n * 1e6:.1f} us/node)  ratio {mw / mf:.2f}x")
        rows.append({"metric": f"validate + plan, {n}-node chain in {instances} subgraphs", "median": mw,
                     "min": min(t_wrap), "max": max(t_wrap), "unit": "s", "ratio": mw / mf,
                     "reference": f"the flat chain, same run: {mf:.4f} s", "target": "linear; same keys"})
        if not same:
            raise SystemExit("cache keys differ between the flat and the wrapped graph")
    growth = per_node["wrapped"][-1] / per_node["wrapped"][0]
    growth_min = per_node["wrapped_min"][-1] / per_node["wrapped_min"][0]
    print(f"\nper-node time wrapped, 5,000 vs 1,250 nodes: {growth:.2f}x by medians, {growth_min:.2f}x by minima "
          "(1.0 = linear; 4.0 would be quadratic)")
    calls = per_node["calls"]
    print(f"Python calls per node, wrapped, at {', '.join(f'{c:.1f}' for c in calls)}: "
          f"{'constant (linear work)' if max(calls) - min(calls) < 0.5 else 'NOT constant'}")
    rows.append({"metric": "Python calls per node planning the wrapped chain (1,250 / 2,500 / 5,000 nodes)",
                 "median": calls[-1], "min": min(calls), "max": max(calls), "unit": "calls",
                 "target": "constant (linear)"})
    rows.append({"metric": "wrapped per-node planning time, 5,000 vs 1,250 nodes", "median": growth,
                 "min": growth_min, "unit": "x", "target": "~1 (linear)"})
    emit_summary("subgraph_plan", rows)


if __name__ == "__main__":
    main()
