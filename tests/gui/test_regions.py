"""Regional prompting in the editor (issue 16): the area editor on Set Area nodes (opened from the
area overlay on the canvas) and the mask editor on Load Image nodes -- real mouse events on
``view.viewport()`` and on the editors' widgets, values through the undo stack, masks saved,
reopened and used by a run."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMenu

from nodegraph import Executor, Graph

from .conftest import make_registry, vpos

CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def registry():
    import nodes.diffusion.pack
    import nodes.image

    reg = make_registry()
    nodes.image.register(reg)
    nodes.diffusion.pack.register(reg)
    return reg


def regional_graph() -> Graph:
    """Two prompts on the halves of a 96x64 latent, combined into a sampler."""
    g = Graph()
    g.add_node("diffusion.empty_latent", {"width": 96, "height": 64, "batch_size": 1}, id="latent",
               ui={"pos": [40, 400]})
    g.add_node("diffusion.conditioning_set_area", {"width": 48, "height": 64, "x": 0, "y": 0, "strength": 1.0},
               id="left", title="Left", ui={"pos": [40, 40]})
    g.add_node("diffusion.conditioning_set_area_percentage",
               {"width": 0.5, "height": 1.0, "x": 0.5, "y": 0.0, "strength": 1.0}, id="right", title="Right",
               ui={"pos": [320, 40]})
    g.add_node("diffusion.conditioning_combine", {}, id="combine", ui={"pos": [600, 40]})
    g.add_node("diffusion.ksampler", {}, id="sampler", ui={"pos": [880, 40]})
    g.connect("left", "CONDITIONING", "combine", "conditioning_1")
    g.connect("right", "CONDITIONING", "combine", "conditioning_2")
    g.connect("combine", "CONDITIONING", "sampler", "positive")
    g.connect("latent", "LATENT", "sampler", "latent_image")
    return g


def _dialogs(cls):
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, cls) and w.isVisible()]


def _drag(widget, a: QPointF, b: QPointF, button=Qt.MouseButton.LeftButton, steps: int = 6) -> None:
    a, b = a.toPoint(), b.toPoint()
    QTest.mousePress(widget, button, Qt.KeyboardModifier.NoModifier, a)
    for i in range(1, steps + 1):
        QTest.mouseMove(widget, a + (b - a) * (i / steps))
    QTest.mouseRelease(widget, button, Qt.KeyboardModifier.NoModifier, b)


def _overlay_point(view, nid: str) -> QPoint:
    item = view.gscene.node_items[nid]
    return vpos(view, item.mapToScene(item.layout.preview.center()))


def test_area_overlay_opens_the_editor_and_a_drawn_rectangle_sets_the_node(window, qtbot):
    from gui.area_editor import AreaEditorDialog

    window.set_graph(regional_graph(), None)
    view, g = window.view, window.graph
    item = view.gscene.node_items["left"]
    assert item.preview is not None and item.layout.preview is not None  # the area shows on the node
    before_overlay = item.preview.copy()
    view.centerOn(item.sceneBoundingRect().center())
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     _overlay_point(view, "left"))
    dlg = _dialogs(AreaEditorDialog)[0]
    qtbot.addWidget(dlg)
    assert dlg.canvas.size_px == (96, 64)  # found through Combine -> KSampler -> Empty Latent
    assert [a.node_id for a in dlg.canvas.areas] == ["left", "right"]  # the other area is shown too
    # Drag from (97, 65) to (41, 9) in image pixels (outside the current area: a new rectangle), snapped to
    # Set Area's 8 px step, clamped to the canvas.
    c = dlg.canvas
    _drag(c, c.from_pixels(QPointF(97, 65)), c.from_pixels(QPointF(41, 9)))  # snaps far from a half step
    assert dlg.values() == {"x": 40, "y": 8, "width": 56, "height": 56}
    _drag(c, c.from_pixels(QPointF(60, 30)), c.from_pixels(QPointF(40, 42)))  # inside it: moves it
    assert dlg.values() == {"x": 24, "y": 8, "width": 56, "height": 56}  # up is clamped at the canvas edge
    _drag(c, c.from_pixels(QPointF(60, 30)), c.from_pixels(QPointF(76, 30)))
    assert dlg.values() == {"x": 40, "y": 8, "width": 56, "height": 56}
    assert g.node("left").values["x"] == 0  # nothing written before Apply
    undo_before = window.undo.count()
    QTest.mouseClick(dlg.apply_button, Qt.MouseButton.LeftButton)
    assert {k: g.node("left").values[k] for k in ("x", "y", "width", "height")} == \
        {"x": 40, "y": 8, "width": 56, "height": 56}
    assert window.undo.count() == undo_before + 1  # one undo step for the four values
    assert not item.preview.isNull() and item.preview != before_overlay  # the overlay followed
    view.setFocus()
    QTest.keyClick(view.viewport(), Qt.Key.Key_Z, CTRL)
    assert {k: g.node("left").values[k] for k in ("x", "y", "width", "height")} == \
        {"x": 0, "y": 0, "width": 48, "height": 64}
    assert item.preview == before_overlay


def test_percentage_area_is_written_as_fractions_and_the_size_follows_the_latent(window, qtbot):
    from gui.area_editor import AreaEditorDialog
    from gui.regions import context_items

    window.set_graph(regional_graph(), None)
    g = window.graph
    menu = QMenu(window)
    context_items(menu, window.scene, "right", window.view)
    action = next(a for a in menu.actions() if a.text() == "Edit Area…")
    action.trigger()
    dlg = _dialogs(AreaEditorDialog)[0]
    qtbot.addWidget(dlg)
    c = dlg.canvas
    _drag(c, c.from_pixels(QPointF(24, 48)), c.from_pixels(QPointF(72, 16)))  # dragged up-right: normalised
    QTest.mouseClick(dlg.apply_button, Qt.MouseButton.LeftButton)
    assert {k: g.node("right").values[k] for k in ("x", "y", "width", "height")} == \
        {"x": 0.25, "y": 0.25, "width": 0.5, "height": 0.5}
    window.scene.set_value("latent", "width", 64)  # the overlay's canvas follows the latent
    assert window.view.gscene.node_items["right"].preview.height() == 160  # square canvas, clamped thumb


def _picture(path, w=32, h=24):
    from PIL import Image

    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(px, "RGB").save(path)
    return px


def _at(canvas, x: int, y: int) -> QPointF:
    """Widget position of the centre of image pixel (x, y)."""
    return canvas.from_image(QPointF(x + 0.5, y + 0.5))


def _open_mask_editor(window, qtbot, nid):
    """Right-click the node (the view's context-menu request, as a right click makes it) and pick
    "Edit Mask…" in the menu that pops up."""
    from gui.mask_editor import MaskEditorDialog

    view = window.view
    item = view.gscene.node_items[nid]
    view.centerOn(item.sceneBoundingRect().center())
    view.customContextMenuRequested.emit(vpos(view, item.mapToScene(QPointF(item.layout.width / 2, 12))))
    menu = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QMenu) and w.isVisible())
    assert window.scene.selected_node_ids() == [nid]  # the right-clicked node
    next(a for a in menu.actions() if a.text() == "Edit Mask…").trigger()
    menu.close()
    dlg = _dialogs(MaskEditorDialog)[-1]
    qtbot.addWidget(dlg)
    if dlg.canvas.picture is None:
        with qtbot.waitSignal(dlg.loaded, timeout=5000) as sig:
            pass
        assert sig.args == [""]
    return dlg


def test_paint_undo_save_reopen_and_run_use_the_mask(window, qtbot, tmp_path):
    from gui.mask_editor import gray_to_array

    inputs = tmp_path / "input"
    inputs.mkdir()
    window.settings["input_dir"] = str(inputs)
    px = _picture(inputs / "photo.png")
    g = Graph()
    g.add_node("image.load", {"image": "photo.png"}, id="load", ui={"pos": [40, 40]})
    g.add_node("diffusion.conditioning_set_mask", {}, id="setmask", ui={"pos": [400, 40]})
    g.connect("load", "MASK", "setmask", "mask")
    window.set_graph(g, None)
    graph = window.graph

    dlg = _open_mask_editor(window, qtbot, "setmask")  # Set Mask edits the mask of the Load Image feeding it
    assert dlg.node_id == "load"
    c = dlg.canvas
    assert not gray_to_array(c.mask).any()  # an opaque picture: empty mask
    dlg.brush.setValue(4)
    _drag(c, _at(c, 4, 5), _at(c, 26, 5))
    first = gray_to_array(c.mask)
    assert first[5, 6:24].min() == 255 and not first[15:].any()  # painted along row 5 only
    _drag(c, _at(c, 4, 17), _at(c, 26, 17))
    both = gray_to_array(c.mask)
    assert both[17, 6:24].min() == 255
    _drag(c, _at(c, 10, 17), _at(c, 14, 17), button=Qt.MouseButton.RightButton)
    erased = gray_to_array(c.mask)
    assert erased[17, 12] == 0 and erased[17, 20] == 255  # right drag erases
    assert c._overlay == c._overlay_pixels(erased)  # drawn stroke by stroke = drawn at once
    QTest.mouseClick(dlg.undo_button, Qt.MouseButton.LeftButton)
    np.testing.assert_array_equal(gray_to_array(c.mask), both)
    QTest.mouseClick(dlg.undo_button, Qt.MouseButton.LeftButton)
    np.testing.assert_array_equal(gray_to_array(c.mask), first)  # one stroke per undo step
    QTest.mouseClick(dlg.redo_button, Qt.MouseButton.LeftButton)
    np.testing.assert_array_equal(gray_to_array(c.mask), both)

    undo_before = window.undo.count()
    with qtbot.waitSignal(dlg.saved, timeout=5000) as sig:
        QTest.mouseClick(dlg.save_button, Qt.MouseButton.LeftButton)
    name = sig.args[0]
    assert name.startswith("clipspace/photo-mask-") and name.endswith(".png")
    assert graph.node("load").values["image"] == name and window.undo.count() == undo_before + 1
    assert (inputs / "photo.png").exists()  # the original is untouched
    assert [p.name for p in (inputs / "clipspace").iterdir()] == [name.split("/")[1]]  # no temporaries left

    reopened = _open_mask_editor(window, qtbot, "load")
    np.testing.assert_array_equal(gray_to_array(reopened.canvas.mask), both)  # reopen shows the saved mask
    reopened.reject()

    # A run of the node gives the painted mask as MASK and the unchanged picture as IMAGE.
    ex = Executor(window.scene.registry, device="cpu", output_dir=tmp_path / "out",
                  settings={"input_dir": str(inputs)})
    report = ex.run(graph.copy(), outputs=["load"])
    assert report.status == "ok", report.error
    mask = report.results["load"]["MASK"][0].numpy()
    np.testing.assert_allclose(mask * 255, both.astype(np.float32), rtol=0, atol=255 * 4 * np.finfo(np.float32).eps)
    np.testing.assert_array_equal((report.results["load"]["IMAGE"][0].numpy() * 255).round().astype(np.uint8), px)

    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=3000)
    window.view.setFocus()
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_Z, CTRL)  # the graph's undo points back at the original
    assert graph.node("load").values["image"] == "photo.png"


def test_feather_clear_invert_and_shortcut_undo(window, qtbot, tmp_path):
    from gui.mask_editor import feather, gray_to_array

    inputs = tmp_path / "input"
    inputs.mkdir()
    window.settings["input_dir"] = str(inputs)
    _picture(inputs / "p.png", 40, 40)
    g = Graph()
    g.add_node("image.load_mask", {"image": "p.png", "channel": "alpha"}, id="load")  # Load Image (as Mask)
    window.set_graph(g, None)
    dlg = _open_mask_editor(window, qtbot, "load")
    c = dlg.canvas
    dlg.invert_button.click()
    assert gray_to_array(c.mask).min() == 255
    dlg.clear_button.click()
    assert not gray_to_array(c.mask).any()
    dlg.brush.setValue(10)
    _drag(c, _at(c, 20, 20), _at(c, 21, 20))
    sharp = gray_to_array(c.mask)
    dlg.feather.setValue(4)
    soft = dlg.mask_array()
    np.testing.assert_array_equal(soft, feather(sharp, 4))
    assert 0 < int(soft[20, 27]) < 255  # a soft edge
    assert int(soft.sum()) == pytest.approx(int(sharp.sum()), rel=0.02)  # blur keeps the mass
    dlg.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is dlg, timeout=3000)
    QTest.keyClick(dlg.canvas, Qt.Key.Key_Z, CTRL)  # Ctrl+Z inside the editor undoes the stroke
    assert not gray_to_array(c.mask).any()
    with qtbot.waitSignal(dlg.saved, timeout=5000) as sig:
        dlg.save_button.click()
    from PIL import Image

    alpha = np.asarray(Image.open(inputs / sig.args[0]))[..., 3]
    assert (alpha == 255).all()  # the mask saved is the undone (empty) one
    assert window.graph.node("load").values == {"image": sig.args[0], "channel": "alpha"}


def test_mask_editor_refuses_a_colour_channel_mask(window, qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from gui.regions import open_mask_editor

    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: shown.append(a[2]))
    g = Graph()
    g.add_node("image.load_mask", {"image": "p.png", "channel": "red"}, id="load")
    g.add_node("diffusion.conditioning_set_mask", {}, id="setmask")
    g.add_node("image.invert_mask", {}, id="invert")  # a mask made by another node: nothing to paint on
    g.connect("invert", "MASK", "setmask", "mask")
    window.set_graph(g, None)
    assert open_mask_editor(window.scene, "load", window.view) is None and "channel" in shown[-1]
    assert open_mask_editor(window.scene, "setmask", window.view) is None and "Load Image" in shown[-1]
    window.scene.set_value("load", "channel", "alpha")
    dlg = open_mask_editor(window.scene, "load", window.view)  # p.png is not in the input folder
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.loaded, timeout=5000) as sig:
        pass
    assert "p.png" in sig.args[0] and "p.png" in dlg.status.text() and not dlg.save_button.isEnabled()


def test_area_node_without_a_latent_assumes_a_canvas_that_holds_it(window, qtbot):
    from gui.area_editor import AreaEditorDialog

    g = Graph()
    g.add_node("diffusion.conditioning_set_area", {"width": 256, "height": 64, "x": 512, "y": 0}, id="a")
    window.set_graph(g, None)
    item = window.view.gscene.node_items["a"]
    assert item.preview is not None  # the overlay (and its click-to-edit) is there without a latent
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     _overlay_point(window.view, "a"))
    dlg = _dialogs(AreaEditorDialog)[0]
    qtbot.addWidget(dlg)
    assert dlg.canvas.size_px == (768, 512) and "no Empty Latent" in dlg.size_note.text()
    dlg.w_box.setValue(1024)  # the user says what the canvas is
    c = dlg.canvas
    _drag(c, c.from_pixels(QPointF(904, 104)), c.from_pixels(QPointF(1100, 304)))  # multiples of 8: ±1 px safe
    assert dlg.values() == {"x": 904, "y": 104, "width": 120, "height": 200}  # clamped to the canvas


def test_a_new_mask_for_an_unconnected_set_mask_is_painted_on_the_latent_canvas(window, qtbot, tmp_path):
    """Set Mask with nothing on its mask input: "Edit Mask…" paints on a blank canvas of the latent's size;
    Save adds a Load Image (as Mask) reading the saved file, wired in -- one undo step."""
    from gui.mask_editor import gray_to_array

    inputs = tmp_path / "input"
    window.settings["input_dir"] = str(inputs)  # not created yet: Save makes it
    g = regional_graph()
    g.add_node("diffusion.conditioning_set_mask", {"strength": 1.0, "set_cond_area": "default"}, id="setmask",
               ui={"pos": [320, 420]})
    g.connect("setmask", "CONDITIONING", "combine", "conditioning_2")
    window.set_graph(g, None)
    graph = window.graph
    nodes_before = set(graph.nodes)
    dlg = _open_mask_editor(window, qtbot, "setmask")
    c = dlg.canvas
    assert (c.picture.width(), c.picture.height()) == (96, 64)  # the Empty Latent's size
    dlg.brush.setValue(6)
    _drag(c, _at(c, 60, 10), _at(c, 60, 50))
    painted = gray_to_array(c.mask)
    assert painted[30, 58:62].min() == 255 and not painted[:, :50].any()
    undo_before = window.undo.count()
    with qtbot.waitSignal(dlg.saved, timeout=5000) as sig:
        QTest.mouseClick(dlg.save_button, Qt.MouseButton.LeftButton)
    new = dlg.created_node
    assert set(graph.nodes) - nodes_before == {new} and window.undo.count() == undo_before + 1
    assert graph.node(new).type == "image.load_mask"
    assert graph.node(new).values == {"image": sig.args[0], "channel": "alpha"}
    link = graph.link_into("setmask", "mask")
    assert (link.src, link.src_output) == (new, "MASK")
    ex = Executor(window.scene.registry, device="cpu", output_dir=tmp_path / "out", settings={"input_dir": str(inputs)})
    report = ex.run(graph.copy(), outputs=[new])
    assert report.status == "ok", report.error
    np.testing.assert_allclose(report.results[new]["MASK"][0].numpy() * 255, painted.astype(np.float32),
                               rtol=0, atol=255 * 4 * np.finfo(np.float32).eps)
    window.undo.undo()
    assert set(graph.nodes) == nodes_before and graph.link_into("setmask", "mask") is None
