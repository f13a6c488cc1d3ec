"""Regression tests for the "Broken" list of issue 20, through real events on
``view.viewport()`` where a gesture is involved."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from PySide6.QtCore import QPointF, QSettings, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from gui.runner import detached_workers

from .conftest import HOLD_OPEN, RELEASE, drag, port_pos, vpos
from .test_canvas import setup
from .test_run import chain, ctrl_enter

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "comfy" / "fixtures"


# -- closing while a node that cannot be cancelled runs -----------------------------------------
def test_close_while_an_uncancellable_node_runs_closes_at_once(window, qtbot):
    window.set_graph(chain(middle="test.uncancellable"), None)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.scene.states.get("b") == "running", timeout=10_000)
    job = window.runner._current
    t0 = time.perf_counter()
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    closed_in = time.perf_counter() - t0
    assert not window.isVisible()
    assert closed_in < 1.0  # no multi-second wait for the node
    assert job.cancel.cancelled  # the run is cancelled...
    assert window.runner.thread.isRunning() and detached_workers() >= 1  # ...and its worker kept alive
    HOLD_OPEN.set()
    qtbot.waitUntil(window.runner.thread.isFinished, timeout=10_000)
    assert detached_workers() == 0


def test_process_exits_cleanly_after_closing_during_an_uncancellable_node(tmp_path):
    """The crash of the issue: "QThread: Destroyed while thread is still running", exit 134."""
    script = textwrap.dedent("""
        import sys, threading, time
        from pathlib import Path
        from PySide6.QtCore import QSettings, QTimer
        from PySide6.QtWidgets import QApplication
        from tests.gui.conftest import HOLD_OPEN, make_registry
        from tests.gui.test_run import chain
        from gui.main_window import MainWindow

        tmp = Path(sys.argv[1])
        app = QApplication([])
        win = MainWindow(make_registry(), output_dir=tmp / "out", recovery_path=tmp / "rec.json",
                         qsettings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
        win.quiet = True
        win.set_graph(chain(middle="test.uncancellable"), None)
        win.show()
        win.run()

        def poll():
            if win.scene.states.get("b") != "running":
                QTimer.singleShot(20, poll)
                return
            t0 = time.perf_counter()
            win.close()
            print(f"closed in {time.perf_counter() - t0:.3f} s", flush=True)
            release = threading.Timer(1.0, HOLD_OPEN.set)
            release.daemon = True  # Python joins other threads before atexit: this must not count
            release.start()

        QTimer.singleShot(20, poll)
        rc = app.exec()
        print("event loop ended", flush=True)
        sys.exit(rc)
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    closed = float(proc.stdout.split("closed in ")[1].split()[0])
    assert closed < 1.0
    assert "event loop ended" in proc.stdout
    assert "waiting for the running node" in proc.stderr
    assert "Destroyed while thread" not in proc.stderr


# -- node states after cancel / error ------------------------------------------------------------
def test_cancel_leaves_no_node_running_or_queued(window, qtbot):
    window.set_graph(chain(steps=400), None)
    reports = []
    window.runner.runFinished.connect(reports.append)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.scene.states.get("b") == "running", timeout=10_000)
    assert window.scene.states.get("s") == "queued"
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_X,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: len(reports) == 1, timeout=10_000)
    assert reports[0].status == "cancelled"
    states = window.scene.states
    assert states.get("a") == "executed"
    assert states.get("b") not in ("running", "queued") and states.get("s") not in ("running", "queued")


def test_error_leaves_no_node_queued(window, qtbot):
    window.set_graph(chain(middle="test.fail"), None)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    states = window.scene.states
    assert states["b"] == "error" and states["a"] == "executed"
    assert states.get("s") not in ("running", "queued")


# -- a bad file named on the command line ----------------------------------------------------------
def test_corrupt_file_from_command_line_shows_its_error_in_a_dialog(qtbot, tmp_path, monkeypatch):
    from gui.app import create_window, make_app
    from gui.main_window import MainWindow

    shown = []
    monkeypatch.setattr(MainWindow, "present_message", lambda self, *a: shown.append(a))
    bad = tmp_path / "corrupt.json"
    bad.write_text('{"version": 1, "nodes": {"a": ')
    make_app()
    win = create_window(str(bad), output_dir=str(tmp_path / "out"), recover=False,
                        recovery_path=tmp_path / "rec.json",
                        qsettings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    try:
        assert shown == []  # not yet on screen: a dialog now would have no parent window to sit on
        win.show()
        qtbot.waitUntil(lambda: len(shown) == 1, timeout=3000)
        kind, title, message = shown[0]
        assert kind == "warning" and title == "Cannot open" and "corrupt.json" in message
    finally:
        win.shutdown()


# -- seed control on an invalid graph ----------------------------------------------------------------
def test_randomize_on_an_invalid_graph_keeps_the_seed_and_the_undo_stack(window, qtbot):
    g = chain(steps=1)
    g.set_value("a", "size", 1000)  # max is 64: the run is refused
    window.set_graph(g, None)
    window.graph.set_ui("a", "seed_control", {"seed": "randomize"})
    undo_count = window.undo.count()
    ctrl_enter(window)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=10_000)
    assert window.graph.node("a").values["seed"] == 5
    assert window.undo.count() == undo_count
    assert "Cannot run" in window.status_label.text()


def test_randomize_still_applies_when_only_an_unneeded_node_is_invalid(window, qtbot):
    g = chain(steps=1)
    g.add_node("test.fail", {}, id="x", ui={"pos": [0, 400]})  # not wired: the run does not need it
    window.set_graph(g, None)
    window.graph.set_ui("a", "seed_control", {"seed": "increment"})
    qtbot.waitUntil(lambda: window.problems.list.count() > 0, timeout=3000)  # the editor flags "x"
    window.run()
    assert window.graph.node("a").values["seed"] == 6
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    assert window.last_report.status == "ok"


# -- titles, not ids ---------------------------------------------------------------------------------
def test_status_problems_and_undo_name_nodes_by_title(window, qtbot):
    window.set_graph(chain(steps=200), None)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.scene.states.get("b") == "running", timeout=10_000)
    assert window.status_label.text() == "Running Slow Filter…"
    window.runner.cancel()
    RELEASE.set()
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=10_000)

    window.scene.set_value("a", "size", 1000)
    assert window.undo.text(window.undo.index() - 1) == "Set Make Image.size"
    qtbot.waitUntil(lambda: window.problems.list.count() == 1, timeout=3000)
    text = window.problems.list.item(0).text()
    assert "Make Image › size" in text and "[a" not in text
    window.graph.set_title("a", "Noise source")
    window.presenter.revalidate()
    assert "Noise source › size" in window.problems.list.item(0).text()

    view = window.view
    window.graph.disconnect("b", "image")
    QApplication.processEvents()
    drag(view, port_pos(view, "a", "out", "IMAGE"), port_pos(view, "b", "in", "image"))
    assert window.undo.text(window.undo.index() - 1) == "Connect Noise source.IMAGE → Slow Filter.image"


# -- the dropped wire while its search is open ------------------------------------------------------
def test_dropped_wire_stays_visible_while_its_search_is_open(window):
    view, g = setup(window)
    start = port_pos(view, "a", "out", "IMAGE")
    empty = vpos(view, QPointF(450, 420))
    drag(view, start, empty)
    assert view.search.isVisible()
    wire = view._drop_wire
    assert wire is not None and wire.scene() is window.scene and wire.isVisible()
    end = wire.path().pointAtPercent(1.0)
    assert (view.mapFromScene(end) - empty).manhattanLength() <= 2  # drawn to where it was dropped
    QTest.keyClick(view.search.edit, Qt.Key.Key_Escape)
    assert not view.search.isVisible() and view._drop_wire is None and wire.scene() is None
    drag(view, start, empty)  # and once more, this time picking a node: the wire becomes a link
    QTest.keyClicks(view.search.edit, "slow")
    QTest.keyClick(view.search.edit, Qt.Key.Key_Return)
    assert view._drop_wire is None
    new = [n for n in g.nodes if n not in ("a", "b", "s", "p")]
    assert g.link_into(new[0], "image").src == "a"


# -- ComfyUI import: a dialog only when something needs reading ---------------------------------------
def test_clean_comfyui_import_shows_no_dialog_but_a_lossy_one_does(window, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(window, "present_message", lambda *a: shown.append(a))
    window.quiet = False
    assert window.open_path(FIXTURES / "txt2img_ui.json", ask=False)
    assert shown == []
    assert "imported ComfyUI workflow" in window.last_info
    assert "imported ComfyUI workflow" in window.statusBar().currentMessage()
    assert window.open_path(FIXTURES / "all_nodes_ui.json", ask=False)
    assert len(shown) == 1 and shown[0][0] == "information" and "FaceDetailer" in shown[0][2]


# -- bulk edits on a big graph: one minimap refit per burst, not per change -------------------------
def test_bulk_paste_undo_delete_refit_the_minimap_once(window, qtbot):
    from PySide6.QtCore import QPointF

    from bench.gui_open import generate
    from gui.clipboard import fragment

    g = generate(200, 240)
    doc = fragment(g, list(g.nodes))  # 200 nodes, 240 wires: ~440 change notifications per paste
    QApplication.processEvents()
    mm = window.minimap
    for action in (lambda: window.paste(doc, QPointF(0, 0)), window.undo.undo, window.undo.redo):
        before = mm.refits
        action()
        QApplication.processEvents()
        assert mm.refits - before == 1
    assert len(window.graph) == 200
    window.edits.select_all()
    before = mm.refits
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Delete)
    QApplication.processEvents()
    assert len(window.graph) == 0 and mm.refits - before == 1
    # and the overview did follow: it shows where the nodes were
    window.undo.undo()
    QApplication.processEvents()
    assert mm.shown_rect().contains(window.scene.nodes_rect())


def test_dragging_a_selection_moves_each_wire_once_per_mouse_move(window, monkeypatch):
    view, g = setup(window)
    g.connect("a", "IMAGE", "b", "image")
    g.connect("b", "IMAGE", "s", "images")
    QApplication.processEvents()
    window.edits.select_all()
    placed = []
    real = window.scene._place_wire
    monkeypatch.setattr(window.scene, "_place_wire", lambda w: (placed.append(w), real(w)))
    start = vpos(view, window.scene.node_items["b"].mapToScene(60, 10))
    drag(view, start, start + type(start)(30, 20), steps=3)
    assert placed == []  # both wires join dragged nodes: shifted whole, never re-routed per move
    item_a = window.scene.node_items["a"]
    wire = window.scene.wires[("b", "image")]
    start_pt = wire.mapToScene(wire.path().pointAtPercent(0))
    assert (start_pt - item_a.port_scene_pos("out", "IMAGE")).manhattanLength() < 0.5
    assert window.undo.text(window.undo.index() - 1) == "Move 4 node(s)"
    window.scene.clearSelection()
    window.scene.node_items["b"].setSelected(True)  # one node: its two wires are routed again, once per move
    drag(view, start + type(start)(30, 20), start, steps=3)
    assert len(placed) == 3 * 2


# -- a long prompt grows its box (and the node), then scrolls; it never spills out -----------------
def _inside(window, nid) -> bool:
    ed = window.scene.editor
    node = window.scene.node_items[nid]
    body = node.mapRectToScene(0, 0, node.layout.width, node.layout.height)
    return body.contains(ed.proxy.sceneBoundingRect().adjusted(1, 1, -1, -1))


def test_long_prompt_grows_the_node_then_scrolls_never_overflows(window, qtbot):
    from PySide6.QtWidgets import QPlainTextEdit

    from gui.canvas.layout import MULTILINE_MAX_H

    from .test_canvas import row_point

    view, g = setup(window)
    node = window.scene.node_items["p"]
    h0 = node.layout.height
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     row_point(view, "p", "text"))
    te = window.scene.editor.widget
    assert isinstance(te, QPlainTextEdit) and _inside(window, "p")
    te.selectAll()
    QTest.keyClicks(te, "a red fox in a snowy forest at dawn, soft golden light, shallow depth of field, "
                        "film grain, misty background, tall pine trees, fresh tracks in the snow, "
                        "breath visible in the cold air, award winning wildlife photography, 85mm")
    assert node.layout.height > h0 + 30  # the node grew while typing...
    assert _inside(window, "p")  # ...and the editor stayed inside it
    assert te.verticalScrollBar().maximum() == 0  # everything typed is in view
    te.setPlainText("word " * 400)  # far longer than the biggest box
    row = next(r for r in node.layout.rows if r.kind == "widget" and r.input.name == "text")
    assert row.rect.height() == MULTILINE_MAX_H - 2 and _inside(window, "p")
    assert te.verticalScrollBar().maximum() > 0  # the box scrolls instead
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     vpos(view, QPointF(450, 900)))
    assert g.node("p").values["text"].startswith("word word")
    assert node.layout.height > h0 + 100  # the committed text keeps its room
    window.undo.undo()
    assert node.layout.height == h0  # and undo gives the short box back


# -- smooth on big graphs: wheel zoom scales item-coordinate pictures until the zoom settles --------
def test_wheel_zoom_scales_node_pictures_then_restores_device_caches(window, qtbot):
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QImage, QPainter, QWheelEvent

    from gui.canvas.node_item import NodeItem

    view, _ = setup(window)
    vp = view.viewport()
    items = list(window.scene.node_items.values())
    assert {it.cacheMode() for it in items} == {NodeItem.CacheMode.DeviceCoordinateCache}
    z0 = view.zoom()
    centre = QPointF(vp.rect().center())
    ev = QWheelEvent(centre, QPointF(vp.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, 120),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)
    assert view.zoom() > z0
    assert {it.cacheMode() for it in items} == {NodeItem.CacheMode.ItemCoordinateCache}  # mid-gesture: scaled
    qtbot.waitUntil(lambda: not window.scene.zooming, timeout=2000)
    assert {it.cacheMode() for it in items} == {NodeItem.CacheMode.DeviceCoordinateCache}
    # the grid is drawn without antialiasing, and the items after it get their painter back
    img = QImage(64, 64, QImage.Format.Format_ARGB32)
    painter = QPainter(img)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    view.drawBackground(painter, view.mapToScene(vp.rect()).boundingRect())
    assert painter.testRenderHint(QPainter.RenderHint.Antialiasing)
    painter.end()


# -- revalidation after an edit runs off the UI thread ------------------------------------------------
def test_revalidation_after_an_edit_runs_off_the_ui_thread(window, qtbot, monkeypatch):
    import threading

    import gui.run_presenter as rp

    window.set_graph(chain(), None)
    threads, gate = [], threading.Event()
    real = rp.validate

    def slow_validate(*a, **kw):
        threads.append(threading.current_thread())
        gate.wait(5)  # a validation stuck listing a huge model folder
        return real(*a, **kw)

    monkeypatch.setattr(rp, "validate", slow_validate)
    window.scene.set_value("a", "size", 1000)
    qtbot.waitUntil(lambda: len(threads) == 1, timeout=3000)
    assert threads[0] is not threading.main_thread()
    ticks = []
    QTimer.singleShot(0, lambda: ticks.append(1))
    qtbot.waitUntil(lambda: ticks == [1], timeout=1000)  # the UI thread keeps running meanwhile
    window.scene.set_value("a", "size", 2000)  # a second edit while the first check is stuck
    gate.set()
    qtbot.waitUntil(lambda: "a" in window.scene.issues, timeout=5000)
    assert "2000" in window.scene.issues["a"][0][1]  # the newest graph's problem, not a stale one
    assert all(t is not threading.main_thread() for t in threads)


# -- default seed control: "randomize" in the editor, the saved seed headless --------------------------
def test_new_nodes_and_shipped_workflows_randomize_while_headless_runs_keep_the_saved_seed(window, tmp_path):
    from nodegraph import Executor, load_workflow

    from .conftest import make_registry

    view, g = setup(window)
    nid = view.add_node("test.make_image", QPointF(0, 600))
    assert g.node(nid).ui["seed_control"] == {"seed": "randomize"}
    assert "seed_control" not in g.node(view.add_node("test.prompt", QPointF(0, 800))).ui  # no seed, no control
    for path in sorted((ROOT / "workflows").glob("*.json")):
        wf = load_workflow(path)
        # a sampler that adds no noise (the SDXL refiner's second pass) keeps its unused seed fixed
        seeded = [(n, k) for n in wf for k in ("seed", "noise_seed")
                  if k in n.values and n.values.get("add_noise") != "disable"]
        assert seeded, path.name
        assert all(n.ui.get("seed_control") == {k: "randomize"} for n, k in seeded), path.name

    # headless: the engine never reads the editor's seed control; the saved seed is used, every run
    graph = chain(steps=1)
    graph.set_ui("a", "seed_control", {"seed": "randomize"})
    ex = Executor(make_registry(), output_dir=tmp_path / "out")
    first = ex.run(graph)
    second = ex.run(graph)
    assert first.status == second.status == "ok"
    assert graph.node("a").values["seed"] == 5
    assert "a" in second.cached()  # same seed, same inputs: nothing re-made


# -- the minimap is a picture re-rendered a few times a second, not a second live view ---------------
def test_minimap_redraws_throttled_while_dragging_and_click_moves_the_view(window, qtbot):
    view, g = setup(window)
    mm = window.minimap
    qtbot.waitUntil(lambda: not mm._redraw_timer.isActive(), timeout=2000)
    before = mm.redraws
    start = vpos(view, window.scene.node_items["b"].mapToScene(60, 10))
    drag(view, start, start + type(start)(200, 120), steps=12)
    QApplication.processEvents()
    assert mm.redraws - before <= 2  # 12 moves, at most a couple of pictures (one refit on drop)
    qtbot.waitUntil(lambda: not mm._redraw_timer.isActive(), timeout=2000)
    assert mm.shown_rect().contains(window.scene.node_items["b"].sceneBoundingRect())  # it did follow
    # a click in the overview centres the canvas there
    target = window.scene.node_items["s"].sceneBoundingRect().center()
    t, s = mm._target, mm.shown_rect()
    click = QPointF(t.left() + (target.x() - s.left()) * t.width() / s.width(),
                    t.top() + (target.y() - s.top()) * t.height() / s.height()).toPoint()
    QTest.mouseClick(mm, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, click)
    centre = view.mapToScene(view.viewport().rect().center())
    assert abs(centre.x() - target.x()) < 20 and abs(centre.y() - target.y()) < 20
