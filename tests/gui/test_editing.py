"""Editing: undo/redo of every edit kind, clipboard, modes, groups, reroutes, shortcuts."""

from __future__ import annotations

import json

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QStyleOptionGraphicsItem

from nodegraph.workflow import to_dict

from .conftest import drag, port_pos, vpos
from .test_canvas import setup

CTRL = Qt.KeyboardModifier.ControlModifier


def key(view, k, mod=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(view.viewport(), k, mod)


def title_point(view, nid):
    item = view.gscene.node_items[nid]
    return vpos(view, item.mapToScene(QPointF(item.layout.width / 2, 12)))


def click(view, p, mod=Qt.KeyboardModifier.NoModifier):
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, mod, p)


def test_every_edit_undoes_and_redoes_to_identical_documents(window):
    view, g = setup(window)
    states = [json.dumps(to_dict(g), sort_keys=True)]

    def snap():
        states.append(json.dumps(to_dict(g), sort_keys=True))

    drag(view, port_pos(view, "a", "out", "IMAGE"), port_pos(view, "b", "in", "image"))  # connect
    snap()
    drag(view, title_point(view, "s"), title_point(view, "s") + (title_point(view, "s") * 0 + QPointF(60, 80)
                                                                  .toPoint()))  # move
    assert g.node("s").ui["pos"] == [700.0, 80.0]
    snap()
    click(view, title_point(view, "a"))
    key(view, Qt.Key.Key_B, CTRL)  # bypass
    assert g.node("a").mode == "bypass"
    snap()
    key(view, Qt.Key.Key_M, CTRL)  # mute
    assert g.node("a").mode == "mute"
    snap()
    window.scene.set_value("b", "steps", 7)  # value change
    snap()
    key(view, Qt.Key.Key_G, CTRL)  # group around the selection
    assert len(g.groups) == 1
    snap()
    drag(view, port_pos(view, "b", "in", "image"), vpos(view, QPointF(300, 600)))  # pick the wire up: disconnect
    assert g.link_into("b", "image") is None
    snap()
    click(view, title_point(view, "b"))
    key(view, Qt.Key.Key_Delete)  # remove
    assert "b" not in g.nodes
    snap()
    window.view.add_node("test.prompt", QPointF(100, 500))  # add
    snap()
    n = len(states)
    for i in range(n - 1, 0, -1):
        key(view, Qt.Key.Key_Z, CTRL)
        assert json.dumps(to_dict(g), sort_keys=True) == states[i - 1], f"undo step {i}"
    for i in range(1, n):
        key(view, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
        assert json.dumps(to_dict(g), sort_keys=True) == states[i], f"redo step {i}"
    # the canvas follows the model: same nodes, same wires
    assert set(window.scene.node_items) == set(g.nodes)
    assert set(window.scene.wires) == {(lk.dst, lk.dst_input) for lk in g.links}


def test_copy_paste_and_duplicate_through_the_system_clipboard(window):
    view, g = setup(window)
    g_links_before = len(g.links)
    drag(view, port_pos(view, "a", "out", "IMAGE"), port_pos(view, "b", "in", "image"))
    click(view, title_point(view, "a"))
    click(view, title_point(view, "b"), CTRL)
    assert sorted(window.scene.selected_node_ids()) == ["a", "b"]
    key(view, Qt.Key.Key_C, CTRL)
    text = QGuiApplication.clipboard().text()
    doc = json.loads(text)
    assert set(doc["nodes"]) == {"a", "b"} and doc["links"] == [{"from": ["a", "IMAGE"], "to": ["b", "image"]}]
    QTest.mouseMove(view.viewport(), vpos(view, QPointF(200, 600)))
    key(view, Qt.Key.Key_V, CTRL)
    new = [n for n in g.nodes if n not in ("a", "b", "s", "p")]
    assert len(new) == 2
    types = sorted(g.node(n).type for n in new)
    assert types == ["test.make_image", "test.slow_filter"]
    new_b = next(n for n in new if g.node(n).type == "test.slow_filter")
    assert g.link_into(new_b, "image").src in new  # the copied link joins the copies, not the originals
    assert len(g.links) == g_links_before + 2
    assert sorted(window.scene.selected_node_ids()) == sorted(new)
    key(view, Qt.Key.Key_D, CTRL)
    assert len(g.nodes) == 8
    key(view, Qt.Key.Key_Z, CTRL)
    key(view, Qt.Key.Key_Z, CTRL)
    assert set(g.nodes) == {"a", "b", "s", "p"}


def test_paste_text_copied_from_another_window(window, qtbot, registry, tmp_path):
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow

    view, g = setup(window)
    click(view, title_point(view, "p"))
    key(view, Qt.Key.Key_C, CTRL)
    other = MainWindow(registry, output_dir=tmp_path / "o2", recovery_path=tmp_path / "r2.json",
                       qsettings=QSettings(str(tmp_path / "s2.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(other)
    try:
        ids = other.paste()
        assert [other.graph.node(i).type for i in ids] == ["test.prompt"]
    finally:
        other.undo.setClean()  # so closing it at teardown asks nothing
        other.shutdown()


def test_bypass_and_mute_are_drawn_differently(window):
    from PySide6.QtGui import QImage, QPainter

    view, g = setup(window)
    item = window.scene.node_items["b"]

    def render():  # the item's own paint, at its opacity (bypasses the device cache)
        r = item.boundingRect()
        img = QImage(int(r.width()), int(r.height()), QImage.Format.Format_ARGB32)
        img.fill(0)
        p = QPainter(img)
        p.translate(-r.topLeft())
        p.setOpacity(item.opacity())
        item.paint(p, QStyleOptionGraphicsItem(), None)
        p.end()
        return img

    normal = render()
    click(view, title_point(view, "b"))
    key(view, Qt.Key.Key_B, CTRL)
    assert g.node("b").mode == "bypass"
    bypass = render()
    key(view, Qt.Key.Key_M, CTRL)
    assert g.node("b").mode == "mute"
    mute = render()
    assert item.opacity() < 0.5
    assert normal != bypass and bypass != mute and normal != mute
    key(view, Qt.Key.Key_M, CTRL)  # toggling again returns to normal
    assert g.node("b").mode == "normal"


def test_group_moves_its_nodes_and_collapse(window):
    view, g = setup(window)
    click(view, title_point(view, "a"))
    click(view, title_point(view, "p"), CTRL)
    key(view, Qt.Key.Key_G, CTRL)
    (gid, group), = g.groups.items()
    gi = window.scene.group_items[gid]
    before_a, before_b = list(g.node("a").ui["pos"]), list(g.node("b").ui["pos"])
    title = vpos(view, gi.mapToScene(QPointF(gi.boundingRect().width() - 40, 10)))
    drag(view, title, title + QPointF(50, 30).toPoint())
    assert g.node("a").ui["pos"] == [before_a[0] + 50, before_a[1] + 30]
    assert g.node("b").ui["pos"] == before_b  # outside the group: stays
    key(view, Qt.Key.Key_Z, CTRL)
    assert g.node("a").ui["pos"] == before_a
    # collapse by its title triangle
    item = window.scene.node_items["b"]
    click(view, vpos(view, item.mapToScene(item.collapse_toggle_rect().center())))
    assert g.node("b").ui["collapsed"] is True and item.layout.height < 40


def test_reroute_by_double_clicking_a_wire(window):
    view, g = setup(window)
    g.set_ui("b", "pos", [320, 400])  # keep the wire's middle clear of nodes
    drag(view, port_pos(view, "a", "out", "IMAGE"), port_pos(view, "s", "in", "images"))
    wire = window.scene.wires[("s", "images")]
    mid = wire.path().pointAtPercent(0.5)
    QTest.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, vpos(view, mid))
    rr = [n for n in g if n.type == "primitives.reroute"]
    assert len(rr) == 1
    assert g.link_into(rr[0].id, "input").src == "a" and g.link_into("s", "images").src == rr[0].id
    # a reroute's output keeps the type of what feeds it: an IMAGE input accepts it
    assert window.view.can_connect(rr[0].id, "output", "b", "image")[0]


def test_frame_and_align(window):
    view, g = setup(window)
    key(view, Qt.Key.Key_Home)
    vis = view.mapToScene(view.viewport().rect()).boundingRect()
    assert vis.contains(window.scene.nodes_rect())
    click(view, title_point(view, "a"))
    click(view, title_point(view, "b"), CTRL)
    click(view, title_point(view, "s"), CTRL)
    g.set_ui("b", "pos", [320, 55])
    window.align_selection("top")
    assert g.node("b").ui["pos"][1] == 0 and g.node("s").ui["pos"][1] == 0
    key(view, Qt.Key.Key_F)
    assert view.mapToScene(view.viewport().rect()).boundingRect().contains(window.scene.nodes_rect(["a", "b", "s"]))
