"""Engine overhead benchmarks (issue: Engine core).

Run: .venv/bin/python bench/engine.py

Measures, on the torch-free primitive pack:
* per-node executor overhead on a 1,000-node graph, against a plain Python loop
  calling the same node functions (the zero-overhead floor);
* an unchanged re-run of a 10,000-node chain (everything cached);
* validation + planning of that chain;
* `nodegraph --help` start-up time.
Targets from the issue: <= 0.1 ms/node overhead, re-run < 1 s, --help < 0.5 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import emit_summary, machine, measure, summary  # noqa: E402
from nodegraph import Executor, Graph, Registry, build_plan  # noqa: E402
from nodes import primitives  # noqa: E402


def chain(n: int) -> Graph:
    """int -> int_math x (n-2) -> show."""
    g = Graph()
    g.add_node("primitives.int", {"value": 1}, id="n0")
    for i in range(1, n - 1):
        g.add_node("primitives.int_math", {"b": 1, "op": "add"}, id=f"n{i}")
        g.connect(f"n{i-1}", "INT", f"n{i}", "a")
    g.add_node("primitives.show", id="out")
    g.connect(f"n{n-2}", "INT", "out", "value")
    return g


def wide(n: int) -> Graph:
    """A 1,000-node graph with fan-in: pairs of constants summed in a tree."""
    g = Graph()
    level = []
    for i in range(n // 2):
        g.add_node("primitives.int", {"value": i}, id=f"c{i}")
        level.append(f"c{i}")
    k = 0
    while len(level) > 1 and len(g) < n - 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2], strict=False):
            nid = f"m{k}"
            k += 1
            g.add_node("primitives.int_math", {"op": "add"}, id=nid)
            g.connect(a, "INT", nid, "a")
            g.connect(b, "INT", nid, "b")
            nxt.append(nid)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    g.add_node("primitives.show", id="out")
    g.connect(level[0], "INT", "out", "value")
    return g


def plain_loop(g: Graph, registry: Registry) -> None:
    """The floor: call each node function directly in a precomputed order."""
    plan = build_plan(g, registry)
    fns = [(nid, plan.specs[nid].fn, plan.constants[nid], plan.sources[nid]) for nid in plan.order]

    def run() -> None:
        values: dict[str, object] = {}
        for nid, fn, consts, srcs in fns:
            kw = dict(consts)
            for name, (src, _) in srcs.items():
                kw[name] = values[src]
            values[nid] = fn(None, **kw)

    return run


def main() -> None:
    reg = Registry()
    primitives.register(reg)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        g = wide(1000)
        n = len(g)

        def cold() -> None:
            ex = Executor(reg, device="cpu", output_dir=tmp)
            ex.run(g)

        ours = measure(cold, repeat=7)
        floor = measure(plain_loop(g, reg), repeat=7)
        per_node = (statistics.median(ours) - statistics.median(floor)) / n * 1e3
        print(f"\n1) first run of a {n}-node graph (validate + plan + hash + execute),"
              " vs a plain loop over the same fns")
        print(f"   nodegraph  : {summary(ours, 1e3, 'ms')}")
        print(f"   plain loop : {summary(floor, 1e3, 'ms')}")
        ratio = statistics.median(ours) / statistics.median(floor)
        print(f"   overhead per node: {per_node:.4f} ms (target <= 0.1 ms)  ratio {ratio:.1f}x")

        big = chain(10_000)
        ex = Executor(reg, device="cpu", output_dir=tmp)
        first = measure(lambda: ex.run(big), repeat=1, warmup=0)
        rerun = measure(lambda: ex.run(big), repeat=5, warmup=0)
        report = ex.run(big)
        print("\n2) 10,000-node chain")
        print(f"   first run      : {summary(first)}")
        print(f"   unchanged rerun: {summary(rerun)}  (target < 1 s; executed={len(report.executed())}, "
              f"cached={len(report.cached())})")
        planning = measure(lambda: build_plan(big, reg), repeat=5)
        print(f"   validate+plan  : {summary(planning)}")

        # Cache behaviour: change the first constant (everything downstream re-runs), then
        # change it back (the earlier results are still cached: nothing re-runs).
        big.set_value("n0", "value", 2)
        changed = measure(lambda: ex.run(big), repeat=1, warmup=0)
        big.set_value("n0", "value", 1)
        t_back = measure(lambda: ex.run(big), repeat=1, warmup=0)
        back = ex.run(big)
        print(f"   change first value: {summary(changed)} ; change it back: {summary(t_back)} "
              f"(executed on revert: {len(back.executed())}, cache entries {len(ex.cache)})")
        print("   (reference peer measured here: 400-node unchanged re-run 15 s;"
              " 1,000-node chain hits the recursion limit)")

    helps = measure(lambda: subprocess.run([sys.executable, "-m", "nodegraph.cli", "--help"], check=True,
                                           capture_output=True), repeat=5)
    print(f"\n3) nodegraph --help: {summary(helps)}  (target < 0.5 s)")
    med = statistics.median
    emit_summary("engine", [
        {"metric": "executor overhead per node (1,000 nodes)", "median": per_node, "unit": "ms",
         "ratio": ratio, "reference": "plain loop over the same fns", "target": "<= 0.1 ms"},
        {"metric": "unchanged re-run, 10,000-node chain", "median": med(rerun), "min": min(rerun), "max": max(rerun),
         "unit": "s", "target": "< 1 s", "reference": "peer: 400 nodes 15 s"},
        {"metric": "validate + plan, 10,000-node chain", "median": med(planning), "min": min(planning),
         "max": max(planning), "unit": "s"},
        {"metric": "revert a changed value, 10,000-node chain (0 re-runs)", "median": med(t_back), "unit": "s",
         "reference": f"the change itself {med(changed):.2f} s", "target": "0 nodes executed"},
        {"metric": "nodegraph --help", "median": med(helps), "min": min(helps), "max": max(helps), "unit": "s",
         "target": "< 0.5 s"},
    ])


if __name__ == "__main__":
    main()
