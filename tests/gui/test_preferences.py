"""Edit ▸ Preferences: intra-op threads and cache budget, stored in QSettings and applied
by the runner's worker to the runs queued afterwards (never during a run)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialogButtonBox

from nodegraph import Graph, Int, NodeResult, node
from nodegraph.threads import requested_threads

from .conftest import make_registry

SEEN: list[int | None] = []  # the threads each run's node was asked to use (None: automatic)


@node("test.threads_probe", category="test", display_name="Threads Probe", inputs=[Int("tick", 0)],
      output_node=True, deterministic=False)
def threads_probe(ctx, tick):
    SEEN.append(requested_threads(ctx.settings))
    return NodeResult(ui={"text": str(requested_threads(ctx.settings))})


@pytest.fixture
def registry():
    reg = make_registry()
    reg.add_pack("probe", [threads_probe])
    return reg


def probe_graph() -> Graph:
    g = Graph()
    g.add_node("test.threads_probe", {}, id="p", ui={"pos": [0, 0]})
    return g


def run_and_wait(window, qtbot) -> None:
    n = len(SEEN)
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(SEEN) == n + 1 and not window.runner.busy, timeout=10_000)


def drive_dialog(window, threads_keys: str, cache_text: str, qtbot, vram_text: str = ""):
    """An ``ask_preferences`` that types into the real dialog and presses its buttons."""
    from gui.preferences import PreferencesDialog

    def ask(prefs):
        dialog = PreferencesDialog(prefs, window)
        dialog.show()
        dialog.threads.selectAll()
        QTest.keyClicks(dialog.threads, threads_keys)
        dialog.cache.clear()
        QTest.keyClicks(dialog.cache, cache_text)
        dialog.vram.clear()
        QTest.keyClicks(dialog.vram, vram_text)
        ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
        QTest.mouseClick(ok, Qt.MouseButton.LeftButton)
        accepted = bool(dialog.result())
        if not accepted:
            ask.rejected_with = dialog.error.text()
            dialog.reject()
        window.activateWindow()  # as after a modal dialog: the window has the keyboard again
        return dialog.preferences() if accepted else None

    ask.rejected_with = ""
    return ask


def test_threads_and_budget_apply_to_the_next_runs_and_persist(window, qtbot, registry, tmp_path):
    from gui.main_window import MainWindow

    SEEN.clear()
    window.set_graph(probe_graph(), None)
    run_and_wait(window, qtbot)
    assert SEEN[-1] is None  # automatic
    budget_before = window.executor.cache.budget_bytes

    window.ask_preferences = drive_dialog(window, "3", "64M", qtbot)
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    assert window.qsettings.value("preferences/threads") == "3"
    assert window.executor.settings.get("threads") is None  # not touched from the UI thread
    run_and_wait(window, qtbot)
    assert SEEN[-1] == 3
    assert window.executor.cache.budget_bytes == 64 * 1024**2 != budget_before

    bad = drive_dialog(window, "2", "lots", qtbot)
    window.ask_preferences = bad
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    assert "not a size" in bad.rejected_with  # OK refused, the reason shown
    run_and_wait(window, qtbot)
    assert SEEN[-1] == 3 and window.qsettings.value("preferences/threads") == "3"

    second = MainWindow(registry, output_dir=tmp_path / "o2", recovery_path=tmp_path / "r2" / "a.json",
                        qsettings=window.qsettings, history_path=tmp_path / "h2.json")
    qtbot.addWidget(second)
    try:  # a new session starts with the stored preferences
        assert second.runner.config == {"threads": 3, "cache_budget": "64M", "vram_budget": None}
    finally:
        second.shutdown()

    window.ask_preferences = drive_dialog(window, "0", "", qtbot)  # back to Automatic and the default budget
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    run_and_wait(window, qtbot)
    assert SEEN[-1] is None and window.executor.cache.budget_bytes != 64 * 1024**2


def test_the_command_line_wins_for_its_session(qtbot, tmp_path, registry):
    from gui.main_window import MainWindow

    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    qs.setValue("preferences/threads", "5")
    qs.setValue("preferences/cache_budget", "1G")
    win = MainWindow(registry, settings={"threads": "2"}, output_dir=tmp_path / "out",
                     recovery_path=tmp_path / "rec" / "a.json", qsettings=qs, history_path=tmp_path / "h.json")
    qtbot.addWidget(win)
    try:
        assert win.runner.config == {"cache_budget": "1G", "vram_budget": None}  # threads: --threads 2 holds
        from gui.preferences import current

        assert current(win).threads == 2 and current(win).cache_budget == "1G"
    finally:
        win.shutdown()


def test_device_budget_reaches_the_runs_and_bad_values_are_refused(window, qtbot, tmp_path):
    """The device-memory budget (--vram-budget) is a preference too: it reaches the executor's
    settings for the next run (where the diffusion pack's manager reads it), persists, and a value
    that is neither a size nor auto/unlimited is refused with the accepted forms."""
    window.set_graph(probe_graph(), None)
    window.ask_preferences = drive_dialog(window, "0", "", qtbot, vram_text="48M")
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    assert window.qsettings.value("preferences/vram_budget") == "48M"
    assert window.executor.settings.get("vram_budget") is None  # not touched from the UI thread
    run_and_wait(window, qtbot)
    assert window.executor.settings["vram_budget"] == "48M"

    bad = drive_dialog(window, "0", "", qtbot, vram_text="huge")
    window.ask_preferences = bad
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    assert "unlimited" in bad.rejected_with and "not a size" in bad.rejected_with
    assert window.qsettings.value("preferences/vram_budget") == "48M"

    window.ask_preferences = drive_dialog(window, "0", "", qtbot, vram_text="Unlimited")
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    run_and_wait(window, qtbot)
    assert window.executor.settings["vram_budget"] == "unlimited"
