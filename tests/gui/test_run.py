"""Runs in the worker thread: node states, progress, previews, cancel, queue,
errors on nodes and in the problems panel, seeds after a run, the gallery."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from nodegraph import Graph

from .conftest import RELEASE


def chain(steps: int = 3, middle: str = "test.slow_filter") -> Graph:
    g = Graph()
    g.add_node("test.make_image", {"size": 8, "seed": 5}, id="a", ui={"pos": [0, 0]})
    g.add_node(middle, {"steps": steps} if middle == "test.slow_filter" else {}, id="b", ui={"pos": [320, 0]})
    g.add_node("test.save_image", {}, id="s", ui={"pos": [640, 0]})
    g.connect("a", "IMAGE", "b", "image")
    g.connect("b", "IMAGE", "s", "images")
    return g


def ctrl_enter(window):
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def test_run_shows_progress_preview_states_gallery_and_applies_seed_control(window, qtbot):
    window.set_graph(chain(steps=4), None)
    window.graph.set_ui("a", "seed_control", {"seed": "increment"})
    progress_seen = []
    window.runner.event.connect(lambda ev, img: progress_seen.append((ev.kind, img is not None)))
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    assert window.last_report.status == "ok"
    assert ("node_progress", True) in progress_seen  # previews crossed the thread as QImages
    sc = window.scene
    assert {sc.states[n] for n in "abs"} == {"executed"}
    assert sc.node_items["b"].preview is not None  # the step preview stays on the node
    assert sc.node_items["s"].preview is not None and sc.node_items["s"].preview.width() == 8  # saved image
    assert len(window.gallery.entries) == 1 and "seed=5" in window.gallery.entries[0].settings  # the run's seed
    assert window.graph.node("a").values["seed"] == 6  # "increment" applied for the next run
    window.undo.undo()
    assert window.graph.node("a").values["seed"] == 5


def test_runs_queued_back_to_back_get_successive_seeds(window, qtbot):
    window.set_graph(chain(steps=2), None)
    window.graph.set_ui("a", "seed_control", {"seed": "increment"})
    finished = []
    window.runner.runFinished.connect(finished.append)
    for _ in range(3):
        window.run()
    assert window.graph.node("a").values["seed"] == 8
    qtbot.waitUntil(lambda: len(finished) == 3, timeout=15_000)
    assert [r.status for r in finished] == ["ok"] * 3
    seeds = [re.search(r"seed=(\d+)", e.settings).group(1) for e in reversed(window.gallery.entries)]
    assert seeds == ["5", "6", "7"]


def test_cancel_a_running_job_and_queue_another(window, qtbot):
    window.set_graph(chain(steps=400), None)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.scene.states.get("b") == "running"
                    and window.scene.node_items["b"].progress is not None, timeout=10_000)
    item = window.scene.node_items["b"]
    assert 0 < item.progress[0] < 400 and item.progress[1] == 400
    ctrl_enter(window)  # a second run waits in the queue
    assert window.runner.queued == 1 and window.queue_label.text() == "1 queued"
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_X,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    reports = []
    window.runner.runFinished.connect(reports.append)
    qtbot.waitUntil(lambda: len(reports) >= 1, timeout=10_000)
    assert reports[0].status == "cancelled"
    window.runner.cancel(clear_queue=True)  # the queued one starts; stop it too
    RELEASE.set()
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=10_000)
    assert window.runner.queued == 0


def test_run_error_is_shown_on_node_and_in_problems_panel(window, qtbot):
    window.set_graph(chain(middle="test.fail"), None)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    assert window.last_report.status == "error"
    sc = window.scene
    assert sc.states["b"] == "error" and sc.states["a"] == "executed"
    assert sc.issues["b"] == [("message", "boom -> change the message")]
    item = sc.node_items["b"]
    assert any(r.kind == "error" and "boom" in r.text for r in item.layout.rows)  # message drawn on the node
    lst = window.problems.list
    assert lst.count() == 1 and "boom" in lst.item(0).text()
    window.scene.clearSelection()
    rect = lst.visualItemRect(lst.item(0))
    QTest.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert window.scene.selected_node_ids() == ["b"]


def test_validation_problems_mark_the_input(window, qtbot):
    window.set_graph(chain(), None)
    window.scene.set_value("a", "size", 1000)  # max is 64
    qtbot.waitUntil(lambda: "a" in window.scene.issues, timeout=3000)
    (inp, msg), = window.scene.issues["a"]
    assert inp == "size" and "outside" in msg
    assert "size" in window.problems.list.item(0).text()
    window.undo.undo()
    qtbot.waitUntil(lambda: "a" not in window.scene.issues, timeout=3000)
    assert window.problems.list.count() == 0
    # an invalid graph does not start: the run reports why instead
    window.graph.disconnect("b", "image")
    ctrl_enter(window)
    qtbot.waitUntil(lambda: not window.runner.busy and "Cannot run" in window.status_label.text(), timeout=5000)
