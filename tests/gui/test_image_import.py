"""Pictures into the graph: drop a file or paste a clipboard image -> a Load Image node;
a PNG carrying a workflow still opens that workflow."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QColor, QGuiApplication, QImage
from PySide6.QtTest import QTest

from nodegraph import dump_workflow_text

from .conftest import make_registry
from .test_files import drop
from .test_run import chain


@pytest.fixture
def registry():
    import nodes.image

    reg = make_registry()
    nodes.image.register(reg)
    return reg


@pytest.fixture
def inputs(window, tmp_path):
    folder = tmp_path / "input"
    window.settings["input_dir"] = str(folder)
    return folder


def picture(path, color=(10, 200, 30), size=(12, 9)):
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path


def drop_file(window, path, at=None):
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(path))])
    drop(window.view.viewport(), md, at or QPoint(300, 200))


def test_dropping_a_picture_adds_a_load_image_node_with_it(window, inputs, tmp_path, qtbot):
    window.set_graph(chain(), None)
    src = picture(tmp_path / "photo.png")
    at = QPoint(400, 300)
    undo_before = window.undo.count()
    with qtbot.waitSignal(window.images.finished, timeout=5000) as sig:
        drop_file(window, src, at)
    nid = sig.args[0]
    node = window.graph.node(nid)
    assert node.type == "image.load" and node.values["image"] == "photo.png"
    assert (inputs / "photo.png").read_bytes() == src.read_bytes()
    assert not [p for p in inputs.iterdir() if p.name.startswith(".incoming")]  # no temporary left behind
    drop_scene = window.view.mapToScene(at)
    x, y = node.ui["pos"]
    assert x == round(drop_scene.x()) and y >= round(drop_scene.y())  # at the drop, pushed down if occupied
    new_rect = window.scene.node_items[nid].sceneBoundingRect()
    for other, it in window.scene.node_items.items():
        if other != nid:
            assert not it.sceneBoundingRect().intersects(new_rect), other
    assert window.undo.count() == undo_before + 1
    assert [p for p in window.revalidate() if p.node_id == nid] == []  # Load Image finds the file

    # the same picture again reuses the file; a different one with the same name does not overwrite it
    with qtbot.waitSignal(window.images.finished, timeout=5000) as sig:
        drop_file(window, src, QPoint(600, 500))
    assert window.graph.node(sig.args[0]).values["image"] == "photo.png"
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    picture(other_dir / "photo.png", color=(250, 0, 0))
    with qtbot.waitSignal(window.images.finished, timeout=5000) as sig:
        drop_file(window, other_dir / "photo.png", QPoint(700, 600))
    assert window.graph.node(sig.args[0]).values["image"] == "photo_1.png"
    assert (inputs / "photo.png").read_bytes() == src.read_bytes()

    window.undo.undo()
    window.undo.undo()
    window.undo.undo()
    assert nid not in window.graph.nodes


def test_dropping_a_png_with_a_workflow_opens_the_workflow(window, inputs, tmp_path, qtbot):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    png = tmp_path / "made.png"
    info = PngInfo()
    info.add_text("workflow", dump_workflow_text(chain(steps=7)))
    Image.new("RGB", (8, 8), (200, 0, 0)).save(png, pnginfo=info)
    with qtbot.waitSignal(window.images.finished, timeout=5000):
        drop_file(window, png)
    assert window.graph.node("b").values["steps"] == 7
    assert not inputs.exists() or not list(inputs.iterdir())


def test_pasting_a_clipboard_image_adds_a_load_image_node(window, inputs, qtbot):
    window.set_graph(chain(), None)
    img = QImage(16, 10, QImage.Format.Format_RGB32)
    img.fill(QColor(30, 60, 220))
    QGuiApplication.clipboard().setImage(img)
    QTest.mouseMove(window.view.viewport(), QPoint(500, 400))
    with qtbot.waitSignal(window.images.finished, timeout=5000) as sig:
        QTest.keyClick(window.view.viewport(), Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    node = window.graph.node(sig.args[0])
    name = node.values["image"]
    assert node.type == "image.load" and name.startswith("pasted_") and name.endswith(".png")
    from PIL import Image

    px = np.asarray(Image.open(inputs / name).convert("RGB"))
    assert px.shape == (10, 16, 3) and (px == (30, 60, 220)).all()
    QGuiApplication.clipboard().clear()


def test_dropping_several_pictures_adds_one_node_each_without_overlap(window, inputs, tmp_path, qtbot):
    window.set_graph(chain(), None)
    files = [picture(tmp_path / f"p{i}.png", color=(40 * i, 0, 0)) for i in range(3)]
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(p)) for p in files])
    got: list[str] = []
    window.images.finished.connect(got.append)
    drop(window.view.viewport(), md, QPoint(300, 300))
    qtbot.waitUntil(lambda: len(got) == 3, timeout=5000)
    assert sorted(window.graph.node(n).values["image"] for n in got) == ["p0.png", "p1.png", "p2.png"]
    rects = [window.scene.node_items[n].sceneBoundingRect() for n in got]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])


def test_an_unreadable_drop_says_why(window, inputs, tmp_path, qtbot):
    missing = tmp_path / "gone.png"
    with qtbot.waitSignal(window.images.finished, timeout=5000) as sig:
        drop_file(window, missing)
    assert sig.args[0] == ""
    assert "gone.png" in window.last_error


def test_imported_pictures_get_the_mode_open_would_give_not_mkstemps_private_0600(tmp_path):
    """The input folder is shared with the server and other tools: a dropped or pasted picture must be
    readable like any file the user creates (0666 minus the umask), not left owner-only."""
    import os
    import stat

    from gui.image_import import copy_into, store_png

    (tmp_path / "plain.txt").write_text("x")
    expected = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    folder = tmp_path / "input"
    folder.mkdir()
    copied = copy_into(picture(tmp_path / "red.png", (200, 0, 0)), folder)
    pasted = store_png((tmp_path / "red.png").read_bytes(), folder)
    for name in (copied, pasted):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == expected, name
        assert (folder / name).read_bytes() == (tmp_path / "red.png").read_bytes()
    assert not list(folder.glob(".*"))  # no temporary left behind


def test_a_picture_lands_in_the_tab_it_was_dropped_on(window, inputs, tmp_path, qtbot):
    window.set_graph(chain(), None)
    dropped_on = window.workspace
    src = picture(tmp_path / "late.png")
    with qtbot.waitSignal(window.images.finished, timeout=5000) as sig:
        drop_file(window, src)
        window.new_tab()  # the user moves on before the copy into the input folder is done
    assert window.workspace is not dropped_on and len(window.graph) == 0
    assert dropped_on.graph.node(sig.args[0]).values["image"] == "late.png"
    assert dropped_on.undo.count() == 1 and window.undo.count() == 0
