"""Queue and history panel: queue ×N, reorder/remove pending runs, finished runs with
images, timings and their exact workflow (re-open, re-run), kept across sessions."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

import gui.history as history
from gui.history import HistoryEntry, HistoryStore, read_history
from nodegraph.workflow import to_dict

from .conftest import HOLD_OPEN
from .test_run import chain


def click(button) -> None:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def held_chain():
    """a -> (held until HOLD_OPEN) -> save: the first run blocks, the others wait in the queue."""
    g = chain(middle="test.uncancellable")
    g.node("a").ui["seed_control"] = {"seed": "increment"}
    return g


def test_queue_n_reorder_remove_then_history_with_images_and_exact_workflows(window, qtbot, tmp_path):
    window.set_graph(held_chain(), None)
    panel = window.queue_panel
    panel.count.setValue(4)
    click(panel.queue_button)
    qtbot.waitUntil(lambda: window.runner.busy, timeout=5000)
    ids = panel.pending_ids()
    assert len(ids) == 3 and panel.pending.count() == 4  # the running one is listed first
    assert panel.pending.item(0).text().startswith("▶")

    panel.pending.setCurrentRow(3)  # the last waiting run…
    click(panel.btn_up)  # …one place up
    assert panel.pending_ids() == [ids[0], ids[2], ids[1]]
    click(panel.btn_down)  # and back down
    assert panel.pending_ids() == [ids[0], ids[1], ids[2]]
    panel.pending.setCurrentRow(3)
    click(panel.btn_up)
    assert panel.pending_ids() == [ids[0], ids[2], ids[1]]
    panel.pending.setCurrentRow(1)
    click(panel.btn_remove)
    assert panel.pending_ids() == [ids[2], ids[1]]
    seeds_queued = {j.job_id: j.graph.node("a").values["seed"] for j in window.runner.pending()}
    assert len(set(seeds_queued.values())) == 2  # queue ×N: each run its own seed

    HOLD_OPEN.set()
    qtbot.waitUntil(lambda: len(window.history_store.entries) == 3, timeout=15_000)
    entries = window.history_store.entries  # newest first: the order they ran, reversed
    assert [e.job_id for e in entries] == [ids[1], ids[2], ids[0] - 1]
    for e in entries:
        assert e.status == "ok" and e.images and all(p.endswith(".png") for p in e.images)
        assert {"b", "s"} <= set(e.node_seconds) and e.node_seconds["b"] >= 0
    assert entries[0].workflow["nodes"]["a"]["values"]["seed"] == seeds_queued[ids[1]]
    assert entries[1].workflow["nodes"]["a"]["values"]["seed"] == seeds_queued[ids[2]]
    qtbot.waitUntil(lambda: panel.thumbnail_count() == 3, timeout=5000)
    assert "Uncancellable Load: " in panel.history.item(0).toolTip()  # per-node timings, by name

    # kept across sessions: the file holds exactly what the panel shows
    window.history_store.flush()
    on_disk = read_history(tmp_path / "history.json")
    assert [e.job_id for e in on_disk] == [e.job_id for e in entries]
    assert on_disk[0].workflow == entries[0].workflow
    assert not list(tmp_path.glob(".history*.tmp"))  # written atomically: no temporary left

    click(panel.btn_clear)
    window.history_store.flush()
    assert panel.history.count() == 0 and read_history(tmp_path / "history.json") == []


def test_reopen_and_rerun_use_the_workflow_that_ran(window, qtbot):
    window.set_graph(chain(steps=2), None)
    window.graph.set_value("a", "seed", 11)
    HOLD_OPEN.set()
    click(window.queue_panel.queue_button)
    qtbot.waitUntil(lambda: len(window.history_store.entries) == 1, timeout=10_000)
    ran = window.history_store.entries[0].workflow
    window.scene.set_value("a", "seed", 99)  # the editor moves on
    panel = window.queue_panel
    panel.history.setCurrentRow(0)
    click(panel.btn_rerun)
    qtbot.waitUntil(lambda: len(window.history_store.entries) == 2, timeout=10_000)
    assert window.history_store.entries[0].workflow == ran  # re-run: same workflow, same seed
    assert window.graph.node("a").values["seed"] == 99  # and the editor was left alone

    panel.history.setCurrentRow(1)
    click(panel.btn_open)
    assert to_dict(window.graph) == ran
    assert window.path is None


def test_history_survives_a_new_window(window, qtbot, tmp_path, registry):
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow

    window.set_graph(chain(steps=1), None)
    HOLD_OPEN.set()
    window.run()
    qtbot.waitUntil(lambda: len(window.history_store.entries) == 1, timeout=10_000)
    window.history_store.flush()
    second = MainWindow(registry, output_dir=tmp_path / "out2", recovery_path=tmp_path / "rec2" / "a.json",
                        qsettings=QSettings(str(tmp_path / "s2.ini"), QSettings.Format.IniFormat),
                        history_path=tmp_path / "history.json")
    qtbot.addWidget(second)
    try:
        qtbot.waitUntil(lambda: second.queue_panel.history.count() == 1, timeout=5000)
        assert second.history_store.entries[0].workflow == window.history_store.entries[0].workflow
    finally:
        second.undo.setClean()
        second.shutdown()


def entry(i: int, size: int = 0) -> HistoryEntry:
    return HistoryEntry(i, 1000.0 + i, "ok", 1.0, {"format": "nodegraph.workflow", "pad": "x" * size})


def test_store_is_bounded_atomic_and_survives_a_damaged_file(tmp_path, monkeypatch):
    path = tmp_path / "h" / "history.json"
    store = HistoryStore(path)
    for i in range(history.MAX_ENTRIES + 30):
        store.add(entry(i))
    store.flush()
    kept = read_history(path)
    assert len(kept) == history.MAX_ENTRIES and kept[0].job_id == history.MAX_ENTRIES + 29
    monkeypatch.setattr(history, "MAX_BYTES", 50_000)
    for i in range(10):
        store.add(entry(1000 + i, size=20_000))
    store.flush()
    assert path.stat().st_size <= 50_000 and read_history(path)[0].job_id == 1009
    assert [p.name for p in path.parent.iterdir()] == ["history.json"]
    store.shutdown()

    path.write_text('{"format": "nodegraph.history", "runs": [{"job_id": ')  # a crash mid-write elsewhere
    assert read_history(path) == []
    assert path.with_name("history.json.bad").is_file() and not path.exists()
    json.loads(path.with_name("history.json.bad").read_text() + '1}]}')  # set aside untouched
