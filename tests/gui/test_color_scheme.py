"""The light theme: chosen when the system is set to light, and switched live when it changes."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from gui import theme
from gui.color_scheme import DARK, SchemeFollower, apply_scheme

from .test_run import chain


def canvas_and_node_lightness(window) -> tuple[int, int]:
    view = window.view
    QApplication.processEvents()
    shot = view.viewport().grab().toImage()
    empty = view.mapFromScene(QPointF(450, 500))
    item = window.scene.node_items["s"]
    body = view.mapFromScene(item.mapToScene(QPointF(item.layout.width - 6, item.layout.height - 6)))
    return shot.pixelColor(empty).lightness(), shot.pixelColor(body).lightness()


def test_light_theme_follows_the_system_setting(window, qapp, monkeypatch):
    monkeypatch.delenv("NODEGRAPH_THEME", raising=False)
    sheet, palette = qapp.styleSheet(), QPalette(qapp.palette())
    window.set_graph(chain(), None)
    QApplication.processEvents()
    window.view.set_zoom(1.0)
    window.view.centerOn(QPointF(450, 300))
    follower = SchemeFollower(qapp)  # offscreen Qt reports no scheme: dark
    try:
        assert follower.scheme == "dark"
        canvas, node = canvas_and_node_lightness(window)
        assert canvas < 60 and node < 80
        follower.on_system_changed(Qt.ColorScheme.Light)  # the user switches the desktop to light
        assert follower.scheme == "light"
        canvas, node = canvas_and_node_lightness(window)
        assert canvas > 200 and node > 200
        assert qapp.palette().color(QPalette.ColorRole.Window).lightness() > 200
        follower.on_system_changed(Qt.ColorScheme.Dark)
        canvas, node = canvas_and_node_lightness(window)
        assert canvas < 60 and node < 80

        monkeypatch.setenv("NODEGRAPH_THEME", "light")  # an explicit choice beats the system
        follower.on_system_changed(Qt.ColorScheme.Dark)
        assert follower.scheme == "light"
    finally:
        qapp.styleHints().colorSchemeChanged.disconnect(follower.on_system_changed)
        apply_scheme(qapp, "dark")
        qapp.setStyleSheet(sheet)
        qapp.setPalette(palette)
        assert theme.CANVAS_BG == DARK["CANVAS_BG"]
