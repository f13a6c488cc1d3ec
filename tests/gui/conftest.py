"""GUI test fixtures: a torch-free registry (primitives + fake image nodes) and a
main window with private settings, recovery file and output folder."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QSettings, QStandardPaths  # noqa: E402

from nodegraph import (  # noqa: E402
    Combo,
    Float,
    In,
    Int,
    NodeInputError,
    NodeResult,
    Out,
    Registry,
    Seed,
    String,
    node,
)

QStandardPaths.setTestModeEnabled(True)  # no test writes the user's real history or settings

# Lets a test hold a node "running" until it says so (instead of sleeping).
RELEASE = threading.Event()
# Holds test.uncancellable inside its node (it never looks at cancellation, like a checkpoint load).
HOLD_OPEN = threading.Event()


@node("test.make_image", category="test", display_name="Make Image",
      inputs=[Int("size", 8, min=1, max=64), Seed("seed", 0), Combo("color", ["red", "green", "blue"], "red")],
      outputs=[Out("IMAGE", "IMAGE")])
def make_image(ctx, size, seed, color):
    img = np.zeros((size, size, 3), np.uint8)
    img[..., ["red", "green", "blue"].index(color)] = 200
    return img


@node("test.slow_filter", category="test", display_name="Slow Filter",
      inputs=[In("image", "IMAGE"), Int("steps", 5, min=1, max=1000), Float("strength", 0.5, min=0.0, max=1.0,
                                                                          step=0.05)],
      outputs=[Out("IMAGE", "IMAGE")], deterministic=False)
def slow_filter(ctx, image, steps, strength):
    for i in range(steps):
        preview = np.full((16, 24, 3), (i * 40) % 255, np.uint8)
        ctx.progress(i + 1, steps, preview)
        if not RELEASE.is_set():
            time.sleep(0.02)
    return image


@node("test.save_image", category="test", display_name="Save Test Image",
      inputs=[In("images", "IMAGE"), String("filename_prefix", "img")], output_node=True, deterministic=False)
def save_image(ctx, images, filename_prefix):
    from PIL import Image

    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.output_dir / f"{filename_prefix}_{time.time_ns()}.png"
    Image.fromarray(np.asarray(images)).save(path)
    return NodeResult(ui={"images": [str(path)]}, files=[str(path)])


@node("test.fail", category="test", display_name="Always Fails",
      inputs=[In("image", "IMAGE"), String("message", "boom")], outputs=[Out("IMAGE", "IMAGE")])
def fail(ctx, image, message):
    raise NodeInputError("message", message, "change the message")


@node("test.prompt", category="test", display_name="Prompt",
      inputs=[String("text", "hello", multiline=True)], outputs=[Out("STRING", "STRING")])
def prompt(ctx, text):
    return text


@node("test.uncancellable", category="test", display_name="Uncancellable Load",
      inputs=[In("image", "IMAGE")], outputs=[Out("IMAGE", "IMAGE")], deterministic=False)
def uncancellable(ctx, image):
    HOLD_OPEN.wait(30)  # like a checkpoint load: no progress calls, no cancellation points
    return image


TEST_NODES = [make_image, slow_filter, save_image, fail, prompt, uncancellable]


def make_registry() -> Registry:
    import nodes.primitives

    reg = Registry()
    nodes.primitives.register(reg)
    reg.add_pack("test", TEST_NODES)
    return reg


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture
def window(qtbot, tmp_path, registry):
    from gui.main_window import MainWindow

    RELEASE.clear()
    HOLD_OPEN.clear()
    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(registry, output_dir=tmp_path / "out", recovery_path=tmp_path / "recovery" / "autosave.json",
                     qsettings=qs, autosave_ms=60_000, validate_ms=10, history_path=tmp_path / "history.json")
    win.ask_save_changes = lambda: "discard"
    win.quiet = True
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    win.view.setFocus()
    yield win
    RELEASE.set()
    HOLD_OPEN.set()
    win.undo.setClean()
    win.shutdown()


def vpos(view, scene_point) -> QPoint:
    """Viewport coordinates of a scene point."""
    return view.mapFromScene(scene_point)


def port_pos(view, nid: str, direction: str, port: str) -> QPoint:
    return vpos(view, view.gscene.node_items[nid].port_scene_pos(direction, port))


def drag(view, a: QPoint, b: QPoint, steps: int = 4, button=None, modifier=None) -> None:
    """A real press-move-release on the viewport."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    button = button or Qt.MouseButton.LeftButton
    modifier = modifier or Qt.KeyboardModifier.NoModifier
    vp = view.viewport()
    QTest.mousePress(vp, button, modifier, a)
    for i in range(1, steps + 1):
        QTest.mouseMove(vp, a + (b - a) * (i / steps))
    QTest.mouseRelease(vp, button, modifier, b)


@pytest.fixture(scope="session", autouse=True)
def _clear_clipboard_at_exit():
    """Offscreen Qt crashes at exit if the clipboard still holds our QMimeData."""
    yield
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.instance() is not None:
        QGuiApplication.clipboard().clear()
