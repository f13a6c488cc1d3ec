"""Arrange benchmark: Node ▸ Arrange (Ctrl+L) on a big graph, beside a small one.

Run: .venv/bin/python bench/gui_arrange.py [--nodes 500 --links 600] [--cpu]

Builds the same 500-node / 600-wire primitive graph as bench/gui_open.py on an
offscreen canvas, then times the whole command as the user triggers it (read sizes
from the canvas items, networkx layering, crossing sweeps, one undo command moving
every node and the scene following), undoing between repeats.  The reference is the
same command on a 10-node graph in the same run (the ratio is what to compare across
machines).  ``--cpu`` times with the thread's CPU clock, steadier on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import emit_summary, machine, summary  # noqa: E402
from bench.gui_open import generate  # noqa: E402
from nodegraph import Registry  # noqa: E402


def wide(n_nodes: int, n_links: int, seed: int = 0) -> object:
    """Half sources, half sinks, random wires between them: two tall columns, the case
    where crossing reduction has the most to do."""
    import random

    from nodegraph import Graph

    rng = random.Random(seed)
    g = Graph()
    half = n_nodes // 2
    for i in range(half):
        g.add_node("primitives.int", {"value": i}, id=f"s{i}", ui={"pos": [0, i * 90]})
        g.add_node("primitives.int_math", {"op": "add"}, id=f"t{i}", ui={"pos": [400, i * 90]})
    inputs = [(f"t{i}", name) for i in range(half) for name in ("a", "b")]
    for dst, name in rng.sample(inputs, min(n_links, len(inputs))):
        g.connect(f"s{rng.randrange(half)}", "INT", dst, name)
    return g


def time_arrange(graph: object, reg: Registry, repeat: int, clock: object) -> list[float]:
    from PySide6.QtGui import QUndoStack
    from PySide6.QtWidgets import QApplication

    from gui.canvas import GraphScene
    from gui.layout_actions import arrange_nodes

    undo = QUndoStack()
    scene = GraphScene(reg, undo)
    scene.set_graph(graph)
    app = QApplication.instance()
    out = []
    for _ in range(repeat):
        t0 = clock()
        moved = arrange_nodes(scene, undo)
        app.processEvents()
        out.append(clock() - t0)
        assert moved > 0
        undo.undo()
        app.processEvents()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--links", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cpu", action="store_true", help="time with this thread's CPU clock")
    args = ap.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    import nodes.primitives as primitives

    app = QApplication.instance() or QApplication([])
    del app
    reg = Registry()
    primitives.register(reg)
    clock = time.thread_time if args.cpu else time.perf_counter
    big = time_arrange(generate(args.nodes, args.links), reg, args.repeat, clock)
    small = time_arrange(generate(10, 12), reg, args.repeat, clock)
    wide_t = time_arrange(wide(args.nodes, args.links), reg, args.repeat, clock)
    print(f"machine: {machine()} ({'thread CPU' if args.cpu else 'wall'} time)")
    print(f"arrange {args.nodes} nodes / {args.links} wires: {summary(big, 1000, ' ms')}")
    print(f"arrange 10 nodes (reference):        {summary(small, 1000, ' ms')}")
    print(f"arrange {args.nodes} nodes as two columns with {args.links} random wires: {summary(wide_t, 1000, ' ms')}")
    ratio = statistics.median(big) / statistics.median(small)
    print(f"ratio: {ratio:.1f}x")
    emit_summary("gui_arrange", [{"metric": f"arrange {args.nodes} nodes", "median": statistics.median(big) * 1000,
                                  "min": min(big) * 1000, "max": max(big) * 1000, "unit": "ms",
                                  "reference": statistics.median(small) * 1000, "ratio": ratio}])


if __name__ == "__main__":
    main()
