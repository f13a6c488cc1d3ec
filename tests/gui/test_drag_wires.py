"""Wires follow dragged nodes: a wire between two dragged nodes is shifted whole (cheap),
one with a single dragged end is routed again; either way its ends stay on the ports."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from .conftest import drag, vpos
from .test_run import chain

CTRL = Qt.KeyboardModifier.ControlModifier


def title_point(view, nid):
    item = view.gscene.node_items[nid]
    return vpos(view, item.mapToScene(QPointF(item.layout.width / 2, 12)))


def assert_on_ports(scene, dst, dst_input):
    wire = scene.wires[(dst, dst_input)]
    lk = wire.link
    path = wire.path()
    start, end = wire.mapToScene(path.pointAtPercent(0.0)), wire.mapToScene(path.pointAtPercent(1.0))
    want_a = scene.node_items[lk.src].port_scene_pos("out", lk.src_output)
    want_b = scene.node_items[lk.dst].port_scene_pos("in", lk.dst_input)
    assert (start - want_a).manhattanLength() < 0.01, (start, want_a)
    assert (end - want_b).manhattanLength() < 0.01, (end, want_b)
    assert wire.sceneBoundingRect().contains(want_a) and wire.sceneBoundingRect().contains(want_b)


def setup(window):
    window.set_graph(chain(), None)
    QApplication.processEvents()
    window.view.set_zoom(1.0)
    window.view.centerOn(QPointF(450, 100))
    return window.view, window.scene


def test_wires_stay_on_their_ports_while_and_after_dragging(window, qtbot):
    view, scene = setup(window)
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     title_point(view, "a"))
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, CTRL, title_point(view, "b"))
    assert sorted(scene.selected_node_ids()) == ["a", "b"]
    p = title_point(view, "a")
    drag(view, p, p + QPointF(60, 40).toPoint(), steps=5)
    assert scene.wires[("b", "image")].pos() != QPointF(0, 0)  # a->b moved whole with its two nodes
    assert_on_ports(scene, "b", "image")
    assert_on_ports(scene, "s", "images")  # b->s: one end dragged, routed again
    scene.clearSelection()
    p = title_point(view, "a")  # now only a moves: the shifted wire is routed again from scratch
    drag(view, p, p + QPointF(-30, 90).toPoint())
    assert scene.wires[("b", "image")].pos() == QPointF(0, 0)
    assert_on_ports(scene, "b", "image")
    for _ in range(2):
        QTest.keyClick(view.viewport(), Qt.Key.Key_Z, CTRL)
    assert window.graph.node("a").ui["pos"] == [0, 0]
    assert_on_ports(scene, "b", "image")
    assert_on_ports(scene, "s", "images")


def test_snapping_nodes_by_different_amounts_still_routes_wires(window, qtbot):
    view, scene = setup(window)
    window.graph.node("b").ui["pos"] = [333, 7]  # off the grid: snapping moves it unlike a
    window.set_graph(window.graph.copy(), None)
    QApplication.processEvents()
    view.set_zoom(1.0)
    view.centerOn(QPointF(450, 100))
    window.act_snap.setChecked(True)
    window.toggle_snap()
    try:
        QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         title_point(view, "a"))
        QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, CTRL, title_point(view, "b"))
        p = title_point(view, "a")
        drag(view, p, p + QPointF(47, 23).toPoint(), steps=3)
        a, b = window.graph.node("a").ui["pos"], window.graph.node("b").ui["pos"]
        assert [a[0], a[1]] != [b[0] - 333, b[1] - 7]  # the two moved by different amounts
        assert_on_ports(scene, "b", "image")
    finally:
        window.act_snap.setChecked(False)
        window.toggle_snap()
