"""Legible zoom: the smallest zoom at which node text is still readable.

"Fit" (first open, F, Home) never zooms out past it: a big graph then opens at a
readable size showing its top-left corner, where a left-to-right pipeline starts,
instead of as a page of unreadable specks.  The wheel can still zoom out further;
only fitting respects the floor.
"""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from .node_item import text_font

MIN_TEXT_PX = 11.0  # node labels and values at least this tall on screen (font pixel size)


def text_px_at_zoom_1(device: QWidget) -> float:
    """Pixel size of node text at zoom 1 on ``device`` (points → pixels at its DPI)."""
    f = text_font()
    if f.pixelSize() > 0:
        return float(f.pixelSize())
    return f.pointSizeF() * device.logicalDpiY() / 72.0


def legible_zoom(device: QWidget, min_px: float = MIN_TEXT_PX) -> float:
    """The zoom below which node text would be smaller than ``min_px`` on screen."""
    return min_px / max(1e-6, text_px_at_zoom_1(device))
