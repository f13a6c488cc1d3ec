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


CLOCK: Callable[[], float] = time.perf_counter  # --cpu: this thread's CPU time (steadier under load)


def _timed(app: object, win: object, fn: Callable[[], object]) -> float:
    t0 = CLOCK()
    fn()
    _idle(app, win)
    return CLOCK() - t0


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
    t0 = CLOCK()
    win.presenter.revalidate()
    out["revalidate"] = CLOCK() - t0

    view, vp = win.view, win.view.viewport()
    item = next(iter(win.scene.node_items.values()))
    win.scene.clearSelection()  # one node, at 100 % zoom, in the full window (canvas + minimap)
    view.set_zoom(1.0)
    view.centerOn(item)
    _idle(app, win)
    one = view.mapFromScene(item.mapToScene(item.boundingRect().center().x(), 10))
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, one)
    one_moves = []
    for i in range(1, 11):
        t1 = CLOCK()
        QTest.mouseMove(vp, one + type(one)(3 * i, 2 * i))
        _idle(app, win)
        one_moves.append(CLOCK() - t1)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, one + type(one)(30, 20))
    _idle(app, win)
    out["drag one node: one mouse move"] = one_moves
    win.undo.undo()
    view.frame_all()
    win.edits.select_all()
    _idle(app, win)
    start = view.mapFromScene(item.mapToScene(item.boundingRect().center().x(), 10))
    moves = []
    t0 = CLOCK()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for i in range(1, 11):
        t1 = CLOCK()
        QTest.mouseMove(vp, start + type(start)(4 * i, 3 * i))
        _idle(app, win)
        moves.append(CLOCK() - t1)
    t1 = CLOCK()
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       start + type(start)(40, 30))
    _idle(app, win)
    out["drag-move all: drop (commits the move)"] = CLOCK() - t1
    out["drag-move all: whole gesture, 10 moves"] = CLOCK() - t0
    out["drag-move all: one mouse move"] = moves
    out["undo move"] = _timed(app, win, win.undo.undo)
    win.edits.select_all()
    out["delete all"] = _timed(app, win, win.edits.delete_selection)
    out["undo delete"] = _timed(app, win, win.undo.undo)
    return out


def validation_ui_cost(app: object, tmp: Path, files: int, trials: int) -> dict[str, list[float]]:
    """The shipped default workflow, every model folder holding ``files`` files: how long
    a check takes, and the UI thread's longest stall while it runs in the background
    (wall time: the background thread competes for the GIL in 5 ms slices)."""
    from PySide6.QtCore import QSettings

    from gui.app import build_registry
    from gui.default_workflow import default_graph
    from gui.main_window import MainWindow
    from nodes.diffusion import paths
    from nodes.shared import model_paths  # the folder-listing cache lives here now

    models = tmp / "models"
    old = time.time() - 3600  # model folders are not being written to while one edits
    for kind in paths.KINDS:
        (models / kind).mkdir(parents=True, exist_ok=True)
        for i in range(files):
            (models / kind / f"model_{i:05d}.safetensors").write_bytes(b"")
        os.utime(models / kind, (old, old))
    win = MainWindow(build_registry(), settings={"models_dir": str(models)}, output_dir=tmp / "out",
                     recovery_path=tmp / "rec2.json", autosave_ms=600_000,
                     qsettings=QSettings(str(tmp / "s2.ini"), QSettings.Format.IniFormat))
    win.quiet = True
    win.set_graph(default_graph(), None)
    pres = win.presenter
    out: dict[str, list[float]] = {"sync": [], "cached": [], "ui": [], "total": []}
    for _ in range(trials):
        model_paths._LISTINGS.clear()  # as before the listing cache: every folder read again
        t0 = time.perf_counter()
        pres.revalidate()
        out["sync"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pres.revalidate()  # folders unchanged since: listings from the cache
        out["cached"].append(time.perf_counter() - t0)
        model_paths._LISTINGS.clear()  # the background check below pays for the listing again
        pres.schedule_validation()
        pres.validate_timer.stop()
        t0 = time.perf_counter()
        pres.revalidate_in_background()
        stall = time.perf_counter() - t0
        while pres.validation_pending:  # the UI thread's longest stall while the check runs
            t1 = time.perf_counter()
            app.processEvents()
            stall = max(stall, time.perf_counter() - t1)
            time.sleep(0.001)  # an idle event loop, as between a user's key presses
        out["ui"].append(stall)
        out["total"].append(time.perf_counter() - t0)
    win.undo.setClean()
    win.shutdown()
    win.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--links", type=int, default=600)
    ap.add_argument("--small", type=int, default=10, help="nodes of the reference graph")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--folder-files", type=int, default=2000, help="files per model folder (validation part)")
    ap.add_argument("--cpu", action="store_true",
                    help="time with this thread's CPU clock (steadier on a loaded machine) instead of wall time")
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu:
        CLOCK = time.thread_time

    from PySide6.QtWidgets import QApplication

    from gui import theme

    app = QApplication.instance() or QApplication([])
    theme.apply(app)
    reg = Registry()
    primitives.register(reg)
    big = generate(args.nodes, args.links)
    small = generate(args.small, max(0, args.small * 6 // 5))
    print(f"machine: {machine()}")
    print(f"clock: {'thread CPU time' if args.cpu else 'wall time'}")
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
        val = validation_ui_cost(app, Path(tmp), args.folder_files, max(5, args.trials))
    med = statistics.median
    rows = []
    print(f"\n{'operation':44s} {len(big)} nodes (median, min-max)        {len(small)} nodes   ratio  target")
    for op, samples in results["big"].items():
        ref = results["small"][op]
        target = 0.3 if op not in ("revalidate", "drag-move all: one mouse move", "drag one node: one mouse move",
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
    print(f"\nrevalidation after an edit, default workflow, {args.folder_files} files per model folder:")
    print(f"  validate + plan, every folder listed (no cache)       : {summary(val['sync'], 1e3, ' ms')}")
    print(f"  validate + plan, listings cached by folder mtime     : {summary(val['cached'], 1e3, ' ms')}")
    print(f"  longest UI-thread stall while it runs in background : {summary(val['ui'], 1e3, ' ms')}")
    print(f"  until the problems are shown (background, wall)     : {summary(val['total'], 1e3, ' ms')}")
    rows.append({"metric": f"revalidation after an edit: longest UI stall ({args.folder_files} files/folder)",
                 "median": med(val["ui"]) * 1e3, "min": min(val["ui"]) * 1e3, "max": max(val["ui"]) * 1e3,
                 "unit": "ms", "reference": f"synchronous validate {med(val['sync']) * 1e3:.1f} ms "
                 f"({med(val['cached']) * 1e3:.1f} ms with cached listings)",
                 "ratio": med(val["ui"]) / med(val["sync"])})
    emit_summary("gui_edit", rows)


if __name__ == "__main__":
    main()
