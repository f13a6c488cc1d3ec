"""Node/group colours, snap to grid, paste with links (Ctrl+Shift+V), new nodes never on top of others."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from gui.node_style import GRID, NODE_COLORS

from .conftest import drag, vpos
from .test_run import chain

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


def title_point(view, nid) -> QPoint:
    item = view.gscene.node_items[nid]
    return vpos(view, item.mapToScene(QPointF(item.layout.width / 2, 10)))


def setup(window):
    window.set_graph(chain(), None)
    QApplication.processEvents()
    window.view.set_zoom(1.0)
    window.view.centerOn(QPointF(450, 100))
    return window.view, window.graph


def menu_action(window, menu_title: str, text: str):
    for act in window.findChildren(type(window.act_arrange)):
        if act.text() == text and act.parent() is window:
            menus = [w for w in act.associatedObjects() if getattr(w, "title", lambda: "")() == menu_title]
            if menus:
                return act
    raise AssertionError(f"no {menu_title} ▸ {text}")


def test_colour_selected_node_and_group_one_undo_step(window):
    view, g = setup(window)
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, title_point(view, "b"))
    menu_action(window, "Colour", "Red").trigger()
    assert g.node("b").ui["color"] == NODE_COLORS["Red"]
    window.scene.clearSelection()
    QApplication.processEvents()
    shot = view.viewport().grab().toImage()
    p = title_point(view, "b") + QPoint(-40, 0)
    px = shot.pixelColor(p)
    assert px.red() > px.green() + 15 and px.red() > px.blue() + 15  # the title bar is painted red
    window.undo.undo()
    assert g.node("b").ui.get("color") is None

    gid = window.edits.group_selection() if window.scene.select_nodes(["a"]) is None else None
    window.scene.clearSelection()
    window.scene.group_items[gid].setSelected(True)
    menu_action(window, "Colour", "Blue").trigger()
    assert g.groups[gid].color == NODE_COLORS["Blue"]


def test_snap_to_grid_while_dragging(window):
    view, g = setup(window)
    start = title_point(view, "s")
    drag(view, start, start + QPoint(37, 13))
    assert g.node("s").ui["pos"] == [640 + 37, 13]  # off by default: exact
    window.act_snap.trigger()
    assert window.scene.snap_grid == GRID
    assert window.document.qsettings.value("snap_to_grid", type=bool) is True  # remembered
    start = title_point(view, "s")
    drag(view, start, start + QPoint(50, 29))
    x, y = g.node("s").ui["pos"]
    assert x % GRID == 0 and y % GRID == 0
    assert abs(x - (677 + 50)) <= GRID / 2 and abs(y - (13 + 29)) <= GRID / 2


def test_paste_with_links_rewires_inputs_from_outside(window):
    view, g = setup(window)
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, title_point(view, "b"))
    QTest.keyClick(view.viewport(), Qt.Key.Key_C, CTRL)
    QTest.mouseMove(view.viewport(), vpos(view, QPointF(320, 400)))
    before = set(g.nodes)
    QTest.keyClick(view.viewport(), Qt.Key.Key_V, CTRL | SHIFT)
    (linked,) = set(g.nodes) - before
    assert g.node(linked).type == "test.slow_filter"
    lk = g.link_into(linked, "image")
    assert lk is not None and (lk.src, lk.src_output) == ("a", "IMAGE")
    assert window.undo.undoText() == "Paste with links"
    QTest.mouseMove(view.viewport(), vpos(view, QPointF(320, 700)))
    QTest.keyClick(view.viewport(), Qt.Key.Key_V, CTRL)  # a plain paste brings no outside wires
    (plain,) = set(g.nodes) - before - {linked}
    assert g.link_into(plain, "image") is None
    window.undo.undo()
    window.undo.undo()  # one step removes the node and its wire
    assert set(g.nodes) == before and all(lk.dst in before for lk in g.links)


def test_new_nodes_never_land_on_others(window):
    view, g = setup(window)
    a = window.scene.node_items["a"].sceneBoundingRect()
    nid = view.add_node("test.prompt", a.center())
    new = window.scene.node_items[nid].sceneBoundingRect()
    for other, it in window.scene.node_items.items():
        if other != nid:
            assert not it.sceneBoundingRect().intersects(new), other
    assert window.scene.node_items[nid].pos().x() == round(a.center().x())  # same column as asked, moved down
