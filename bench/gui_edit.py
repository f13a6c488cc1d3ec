"""Bulk edits in the editor: paste, undo, delete and drag-move of a whole graph
(issue 20: 500 nodes froze the window for 5-21 s; target <= 0.3 s each).

Run: .venv/bin/python bench/gui_edit.py [--nodes 500 --links 600 --trials 5]

Each operation runs in a real :class:`gui.main_window.MainWindow` (offscreen),
side by side on the big graph and on a 10-node graph of the same kind, and is
timed until the window is idle again: the edit itself, then every event it
posted (``processEvents``: zero-time timers and the repaint).  The debounced
revalidation that follows an edit is reported on its own line (it runs 250 ms
later, once per burst of edits).  Drag-move is real mouse events on the
viewport: press on a selected node, 10 moves, release (which commits one
undoable move of every selected node); the per-move time is reported too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import emit_summary, machine, summary  # noqa: E402
from bench.gui_open import generate  # noqa: E402
from nodegraph import Graph, Registry  # noqa: E402
from nodes import primitives  # noqa: E402


def _window(reg: Registry, tmp: Path) -> object:
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow

    win = MainWindow(reg, output_dir=tmp / "out", recovery_path=tmp / "rec.json", autosave_ms=600_000,
                     qsettings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
    win.quiet = True
    win.ask_save_changes = lambda: "discard"
    win.resize(1600, 1000)
    win.show()
    return win


def _idle(app: object, win: object) -> None:
    """Deliver what the edit posted, including the repaint it asked for (the offscreen
    platform paints into its backing store as a screen would)."""
    app.processEvents()


def _timed(app: object, win: object, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    _idle(app, win)
    return time.perf_counter() - t0


def run_ops(app: object, win: object, graph: Graph) -> dict[str, list[float] | float]:
    """One trial of every operation on ``graph``; returns seconds per operation."""
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtTest import QTest

    from gui.clipboard import fragment

    win.set_graph(Graph.copy(graph), None)
    _idle(app, win)
    doc = fragment(win.graph, list(win.graph.nodes))
    out: dict[str, list[float] | float] = {}
    win.set_graph(Graph(), None)
    _idle(app, win)
    out["paste"] = _timed(app, win, lambda: win.paste(doc, QPointF(0, 0)))
    win.view.frame_all()
    out["undo paste"] = _timed(app, win, win.undo.undo)
    out["redo paste"] = _timed(app, win, win.undo.redo)
    t0 = time.perf_counter()
    win.presenter.revalidate()
    out["revalidate"] = time.perf_counter() - t0

    win.edits.select_all()
    _idle(app, win)
    view, vp = win.view, win.view.viewport()
    item = next(iter(win.scene.node_items.values()))
    start = view.mapFromScene(item.mapToScene(item.boundingRect().center().x(), 10))
    moves = []
    t0 = time.perf_counter()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for i in range(1, 11):
        t1 = time.perf_counter()
        QTest.mouseMove(vp, start + (start * 0 + type(start)(4 * i, 3 * i)))
        _idle(app, win)
        moves.append(time.perf_counter() - t1)
    t1 = time.perf_counter()
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       start + type(start)(40, 30))
    _idle(app, win)
    out["drag-move all: drop (commits the move)"] = time.perf_counter() - t1
    out["drag-move all: whole gesture, 10 moves"] = time.perf_counter() - t0
    out["drag-move all: one mouse move"] = moves
    out["undo move"] = _timed(app, win, win.undo.undo)
    win.edits.select_all()
    out["delete all"] = _timed(app, win, win.edits.delete_selection)
    out["undo delete"] = _timed(app, win, win.undo.undo)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--links", type=int, default=600)
    ap.add_argument("--small", type=int, default=10, help="nodes of the reference graph")
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from gui import theme

    app = QApplication.instance() or QApplication([])
    theme.apply(app)
    reg = Registry()
    primitives.register(reg)
    big = generate(args.nodes, args.links)
    small = generate(args.small, max(0, args.small * 6 // 5))
    print(f"machine: {machine()}")
    print(f"graphs: {len(big)} nodes/{len(big.links)} wires vs {len(small)} nodes/{len(small.links)} wires")
    results: dict[str, dict[str, list[float]]] = {"big": {}, "small": {}}
    with tempfile.TemporaryDirectory() as tmp:
        win = _window(reg, Path(tmp))
        app.processEvents()
        for _ in range(args.trials):
            for key, g in (("small", small), ("big", big)):
                for op, v in run_ops(app, win, g).items():
                    results[key].setdefault(op, []).extend(v if isinstance(v, list) else [v])
        win.undo.setClean()
        win.shutdown()
        win.close()
    med = statistics.median
    rows = []
    print(f"\n{'operation':44s} {len(big)} nodes (median, min-max)        {len(small)} nodes   ratio  target")
    for op, samples in results["big"].items():
        ref = results["small"][op]
        target = 0.3 if op not in ("revalidate", "drag-move all: one mouse move",
                                   "drag-move all: whole gesture, 10 moves") else None
        ratio = med(samples) / med(ref) if med(ref) > 0 else float("nan")
        print(f"{op:44s} {summary(samples, 1e3, ' ms'):34s} {med(ref) * 1e3:8.1f} ms {ratio:6.1f}x"
              f"  {'<= 300 ms' if target else ''}")
        row = {"metric": f"{op}, {len(big)} nodes", "median": med(samples) * 1e3, "min": min(samples) * 1e3,
               "max": max(samples) * 1e3, "unit": "ms", "reference": f"{med(ref) * 1e3:.1f} ms on {len(small)} nodes",
               "ratio": ratio}
        if target:
            row["target"] = "<= 300 ms"
        rows.append(row)
    emit_summary("gui_edit", rows)


if __name__ == "__main__":
    main()
