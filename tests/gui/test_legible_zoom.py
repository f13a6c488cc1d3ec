"""Legible first open: node text at least 11 px on screen; "fit" keeps that minimum."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from gui.canvas.legibility import MIN_TEXT_PX, text_px_at_zoom_1
from nodegraph import Graph

from .test_run import chain


def big_graph(n: int = 80) -> Graph:
    g = Graph()
    for i in range(n):
        g.add_node("test.make_image", {}, id=f"n{i}", ui={"pos": [(i % 10) * 320, (i // 10) * 260]})
    return g


def on_screen_text_px(window) -> float:
    return text_px_at_zoom_1(window.view.viewport()) * window.view.zoom()


def test_a_big_graph_opens_readable_at_its_top_left(window):
    window.set_graph(big_graph(), None)
    QApplication.processEvents()  # the deferred frame-all
    assert on_screen_text_px(window) >= MIN_TEXT_PX - 1e-6
    view = window.view
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    first = window.scene.node_items["n0"].sceneBoundingRect()
    assert visible.contains(first)  # reading starts where the pipeline starts
    assert not visible.contains(window.scene.node_items["n79"].sceneBoundingRect())  # it does not all fit

    view.set_zoom(0.2)  # the wheel may go further out…
    assert on_screen_text_px(window) < MIN_TEXT_PX
    QTest.keyClick(view.viewport(), Qt.Key.Key_Home)  # …but fitting brings text back to legible
    assert on_screen_text_px(window) >= MIN_TEXT_PX - 1e-6


def test_a_small_graph_still_fits_whole(window):
    window.set_graph(chain(), None)
    QApplication.processEvents()
    view = window.view
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    for it in window.scene.node_items.values():
        assert visible.contains(it.sceneBoundingRect())
    assert on_screen_text_px(window) >= MIN_TEXT_PX - 1e-6
