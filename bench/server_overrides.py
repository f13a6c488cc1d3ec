"""Server: validating a run's overrides, in place (now) vs one graph copy per override (before).

The server checks each override separately so every problem names its node and input.  It used
to apply each one to a fresh copy of the graph (O(overrides x nodes): 4,000 overrides on a small
graph took 49 s); it now applies them one by one to the parsed graph (O(overrides)).  Both are
timed here in the same run on the same graph, with the server's maximum of 256 overrides.

    OMP_NUM_THREADS=1 .venv/bin/python bench/server_overrides.py [--nodes 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import emit_summary, machine, measure, summary  # noqa: E402
from nodegraph import Executor, Graph, Registry  # noqa: E402
from nodegraph.errors import OverrideError  # noqa: E402
from nodegraph.overrides import apply_overrides  # noqa: E402
from nodegraph.server.app import Api  # noqa: E402
from nodegraph.server.routes import _override_problems  # noqa: E402
from nodes import primitives  # noqa: E402


def _graph(nodes: int) -> Graph:
    g = Graph()
    for i in range(nodes):
        g.add_node("primitives.int", {"value": i}, id=f"n{i}")
    return g


def _copy_per_override(graph: Graph, registry: Registry, overrides: dict) -> None:
    """The reference: what the server did before."""
    for key, value in overrides.items():
        try:
            apply_overrides(graph.copy(), registry, {key: value})
        except OverrideError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--overrides", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    reg = Registry()
    reg.load_pack(primitives.register)
    api = Api(Executor(reg, output_dir=tempfile.mkdtemp()))
    try:
        overrides = {f"n{i % args.nodes}.value": i for i in range(args.overrides)}
        base = _graph(args.nodes)
        now = measure(lambda: _override_problems(api, base.copy(), overrides), args.repeat)
        copy_only = measure(lambda: base.copy(), args.repeat)  # the one parse-equivalent cost both share
        before = measure(lambda: _copy_per_override(base, reg, overrides), args.repeat)
    finally:
        api.runs.stop()
    ratio = statistics.median(before) / statistics.median(now)
    print(machine())
    print(f"{args.overrides} overrides on a {args.nodes}-node graph")
    print(f"  in place (now, incl. one graph copy): {summary(now, 1e3, ' ms')}")
    print(f"  one graph copy alone:                 {summary(copy_only, 1e3, ' ms')}")
    print(f"  copy per override (before):           {summary(before, 1e3, ' ms')}")
    print(f"  before / now: {ratio:.1f}x")
    emit_summary("server_overrides", [
        {"metric": f"validate {args.overrides} overrides, {args.nodes} nodes", "median": statistics.median(now),
         "min": min(now), "max": max(now), "unit": "s", "reference": statistics.median(before), "ratio": ratio},
    ])


if __name__ == "__main__":
    main()
