"""Files: save/open round trip, modified marker, prompts, recent files, PNG
workflows, drag-and-drop, autosave and crash recovery."""

from __future__ import annotations

import json

from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from nodegraph import dump_workflow_text
from nodegraph.workflow import to_dict

from .test_run import chain

CTRL = Qt.KeyboardModifier.ControlModifier


def drop(widget, md: QMimeData, pos: QPoint) -> None:
    """What a drag from the file manager delivers: enter (must be accepted), then drop."""
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, md, Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(widget, QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, md, Qt.MouseButton.NoButton,
                                              Qt.KeyboardModifier.NoModifier))


def test_save_open_round_trip_with_modified_marker(window, tmp_path):
    window.set_graph(chain(), None)
    assert not window.isWindowModified() and window.windowTitle().startswith("Untitled")
    window.scene.set_value("a", "size", 12)
    assert window.isWindowModified()
    path = tmp_path / "wf.json"
    window.ask_save_path = lambda: str(path)
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_S, CTRL)
    assert path.is_file() and not window.isWindowModified()
    assert window.windowTitle().startswith("wf.json")
    saved = json.loads(path.read_text())
    assert saved["nodes"]["a"]["values"]["size"] == 12
    before = to_dict(window.graph)
    window.set_graph(chain(), None)
    window.ask_open_path = lambda: str(path)
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_O, CTRL)
    assert to_dict(window.graph) == before and window.path == path
    assert window.recent_files()[0] == str(path.resolve())


def test_prompt_before_losing_changes(window):
    window.set_graph(chain(), None)
    window.scene.set_value("a", "size", 3)
    asked = []
    window.ask_save_changes = lambda: asked.append(1) or "cancel"
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_N, CTRL)
    assert asked and "a" in window.graph.nodes  # cancelled: nothing lost
    window.ask_save_changes = lambda: "discard"
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_N, CTRL)
    assert len(window.graph) == 0 and not window.isWindowModified()


def test_autosave_then_crash_offers_and_restores(window, qtbot, registry, tmp_path):
    from gui.main_window import MainWindow

    window.set_graph(chain(), None)
    window.scene.set_value("a", "size", 33)
    assert window.autosaver.save_now() == window.autosaver.path
    expected = to_dict(window.graph)
    # "kill": the first window never closes cleanly; its process is gone, so is its lock
    window.autosaver.lock.release()
    fresh = MainWindow(registry, output_dir=tmp_path / "o2", recovery_path=window.autosaver.base,
                       qsettings=QSettings(str(tmp_path / "s2.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(fresh)
    offered = []
    fresh.ask_recover = lambda info: offered.append(info) or True
    try:
        assert fresh.offer_recovery()
        assert offered and offered[0]["source"] is None
        assert to_dict(fresh.graph)["nodes"] == expected["nodes"]
        assert fresh.isWindowModified()  # recovered work is unsaved work
    finally:
        fresh.undo.setClean()
        fresh.shutdown()
    # saving (or a clean close) removes the recovery file: nothing offered next time
    window.ask_save_path = lambda: str(tmp_path / "done.json")
    window.save()
    assert window.autosaver.pending() is None


def test_open_png_with_embedded_workflow_and_drop_files(window, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    png = tmp_path / "made.png"
    info = PngInfo()
    info.add_text("workflow", dump_workflow_text(chain(steps=9)))
    Image.new("RGB", (8, 8), (200, 0, 0)).save(png, pnginfo=info)
    assert window.open_path(png)
    assert window.graph.node("b").values["steps"] == 9
    assert window.path is None  # saving never overwrites the image

    wf = tmp_path / "dropped.json"
    wf.write_text(dump_workflow_text(chain(steps=2)))
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(wf))])
    drop(window.view.viewport(), md, QPoint(50, 50))
    assert window.graph.node("b").values["steps"] == 2 and window.path == wf


def test_node_library_drop_adds_node(window):
    from gui.canvas.view import NODE_MIME

    window.set_graph(chain(), None)
    assert "test.make_image" in window.library.type_ids()
    md = QMimeData()
    md.setData(NODE_MIME, b"primitives.int")
    drop(window.view.viewport(), md, QPoint(300, 300))
    assert any(n.type == "primitives.int" for n in window.graph)
