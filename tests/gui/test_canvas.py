"""Canvas interaction through real mouse/keyboard events on the viewport."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QComboBox, QPlainTextEdit, QSpinBox

from nodegraph import Graph

from .conftest import drag, port_pos, vpos


def small_graph() -> Graph:
    g = Graph()
    g.add_node("test.make_image", {"size": 8}, id="a", ui={"pos": [0, 0]})
    g.add_node("test.slow_filter", {}, id="b", ui={"pos": [320, 0]})
    g.add_node("test.save_image", {}, id="s", ui={"pos": [640, 0]})
    g.add_node("test.prompt", {}, id="p", ui={"pos": [0, 260]})
    return g


def row_point(view, nid, name, kind="widget", where="center") -> QPoint:
    item = view.gscene.node_items[nid]
    row = next(r for r in item.layout.rows if r.kind == kind and r.input is not None and r.input.name == name)
    rect = row.rect
    local = {"center": rect.center(), "right": QPointF(rect.right() - 16, rect.center().y()),
             "left": QPointF(rect.left() + 16, rect.center().y())}[where]
    return vpos(view, item.mapToScene(local))


def setup(window):
    window.set_graph(small_graph(), None)
    QApplication.processEvents()  # let the deferred "frame all" run first
    window.view.set_zoom(1.0)
    window.view.centerOn(QPointF(450, 150))
    return window.view, window.graph


def test_drag_between_compatible_ports_connects(window):
    view, g = setup(window)
    drag(view, port_pos(view, "a", "out", "IMAGE"), port_pos(view, "b", "in", "image"))
    link = g.link_into("b", "image")
    assert link is not None and (link.src, link.src_output) == ("a", "IMAGE")
    assert ("b", "image") in window.scene.wires
    # and the reverse direction (input -> output) works too
    drag(view, port_pos(view, "s", "in", "images"), port_pos(view, "b", "out", "IMAGE"))
    assert g.link_into("s", "images").src == "b"


def test_incompatible_ports_dim_while_dragging_and_refuse(window):
    view, g = setup(window)
    vp = view.viewport()
    start, target = port_pos(view, "p", "out", "STRING"), port_pos(view, "b", "in", "image")
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(vp, (start + target) / 2)
    b = window.scene.node_items["b"]
    image_color = QColor(window.registry.types.color("IMAGE"))
    assert window.scene.drag_filter == ("out", "STRING", "p")
    assert b._port_color("in", "image", "IMAGE") != image_color  # dimmed: IMAGE cannot take STRING
    s = window.scene.node_items["s"]
    assert s._port_color("in", "filename_prefix", "STRING") == QColor(window.registry.types.color("STRING"))
    QTest.mouseMove(vp, target)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, target)
    assert g.link_into("b", "image") is None
    assert window.scene.drag_filter is None
    assert "cannot feed" in window.statusBar().currentMessage()
    assert window.undo.count() == 0


def test_wire_dropped_on_empty_canvas_opens_filtered_search_and_connects(window):
    view, g = setup(window)
    empty = vpos(view, QPointF(450, 420))
    drag(view, port_pos(view, "a", "out", "IMAGE"), empty)
    pal = view.search
    assert pal.isVisible()
    results = pal.results()
    assert "test.slow_filter" in results and "test.save_image" in results
    assert "test.make_image" not in results and "primitives.int_math" not in results  # no IMAGE input
    QTest.keyClicks(pal.edit, "slow")
    assert pal.results()[0] == "test.slow_filter"
    QTest.keyClick(pal.edit, Qt.Key.Key_Return)
    assert not pal.isVisible()
    new = [n for n in g.nodes if n not in ("a", "b", "s", "p")]
    assert len(new) == 1 and g.node(new[0]).type == "test.slow_filter"
    assert g.link_into(new[0], "image").src == "a"
    window.undo.undo()  # node + link are one step
    assert new[0] not in g.nodes and len(g.links) == 0


def test_pan_and_zoom(window):
    view, _ = setup(window)
    vp = view.viewport()
    centre = vp.rect().center()
    before = view.mapToScene(centre)
    drag(view, centre, centre + QPoint(100, 50), button=Qt.MouseButton.MiddleButton)
    after = view.mapToScene(centre)
    assert abs((before.x() - after.x()) - 100) < 1 and abs((before.y() - after.y()) - 50) < 1
    anchor = QPointF(centre)
    scene_at = view.mapToScene(centre)
    ev = QWheelEvent(anchor, vp.mapToGlobal(anchor), QPoint(0, 0), QPoint(0, 240), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)
    assert abs(view.zoom() - 1.15 ** 2) < 1e-6
    p = view.mapToScene(centre)
    assert abs(p.x() - scene_at.x()) < 1 and abs(p.y() - scene_at.y()) < 1  # zoom about the cursor


def test_inline_number_widgets_step_and_edit_with_limits(window):
    view, g = setup(window)
    vp = view.viewport()
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, row_point(view, "a", "size",
                                                                                              where="right"))
    assert g.node("a").values["size"] == 9
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, row_point(view, "a", "size"))
    editor = window.scene.editor
    assert isinstance(editor.widget, QSpinBox)
    assert (editor.widget.minimum(), editor.widget.maximum(), editor.widget.singleStep()) == (1, 64, 1)
    editor.widget.selectAll()
    QTest.keyClicks(editor.widget, "99")  # above max: the spin box refuses the second digit
    QTest.keyClick(editor.widget, Qt.Key.Key_Return)
    assert window.scene.editor is None
    assert g.node("a").values["size"] == 9
    # FLOAT row: step 0.05, clamped at max 1.0
    for _ in range(12):
        QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         row_point(view, "b", "strength", where="right"))
    assert g.node("b").values["strength"] == 1.0
    window.undo.undo()  # consecutive steps merged into one undo entry
    assert "strength" not in g.node("b").values


def test_combo_multiline_and_seed_control(window):
    view, g = setup(window)
    vp = view.viewport()
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, row_point(view, "a", "color"))
    combo = window.scene.editor.widget
    assert isinstance(combo, QComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == ["red", "green", "blue"]
    combo.hidePopup()
    combo.setCurrentIndex(2)
    assert g.node("a").values["color"] == "blue"

    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, row_point(view, "p", "text"))
    te = window.scene.editor.widget
    assert isinstance(te, QPlainTextEdit)
    te.selectAll()
    QTest.keyClicks(te, "a cat")
    QTest.keyClick(te, Qt.Key.Key_Return)
    QTest.keyClicks(te, "on a mat")
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, vpos(view, QPointF(450, 500)))
    assert g.node("p").values["text"] == "a cat\non a mat"

    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     row_point(view, "a", "seed", kind="seed_control"))
    assert g.node("a").ui["seed_control"] == {"seed": "increment"}


def test_tab_and_double_click_open_search(window):
    view, g = setup(window)
    QTest.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                      vpos(view, QPointF(450, 500)))
    assert view.search.isVisible()
    QTest.keyClicks(view.search.edit, "int math")
    QTest.keyClick(view.search.edit, Qt.Key.Key_Return)
    assert any(n.type == "primitives.int_math" for n in g)
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Tab)
    assert view.search.isVisible()
    QTest.keyClick(view.search.edit, Qt.Key.Key_Escape)
    assert not view.search.isVisible()
