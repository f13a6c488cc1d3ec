"""The area editor: drag a rectangle on a preview of the latent's canvas to set a Set Area
(pixels) or Set Area with Percentage (fractions) node.

The canvas is the size of the latent the prompt is sampled on (see
:func:`gui.regions.canvas_size`); when no Empty Latent Image can be found, the size boxes
say what to assume (they only change the preview, never the graph).  The graph's other
areas are drawn in their own colours so regions can be laid out side by side.  "Apply"
writes x/y/width/height through the undo stack as one step; nothing changes before that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import regions

if TYPE_CHECKING:
    from .canvas.scene import GraphScene

CANVAS_PX = 420  # the longer side of the drawing area on screen


class AreaCanvas(QWidget):
    """Shows the canvas and the areas; a left drag draws the edited node's rectangle."""

    rectChanged = Signal(QRectF)
    released = Signal()

    def __init__(self, size: tuple[int, int], areas: list[regions.AreaView], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.size_px = size
        self.areas = areas
        self.rect_px = QRectF(areas[0].rect) if areas else QRectF()
        self._anchor: QPointF | None = None
        self._move_from: tuple[QPointF, QRectF] | None = None  # press point and rectangle while moving
        self.setMinimumSize(CANVAS_PX, CANVAS_PX)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setMouseTracking(False)

    def set_size(self, size: tuple[int, int]) -> None:
        self.size_px = size
        self.update()

    def target(self) -> QRectF:
        """Where the canvas is drawn in widget coordinates (aspect kept, centred)."""
        cw, ch = self.size_px
        avail_w, avail_h = self.width() - 16.0, self.height() - 16.0
        scale = min(avail_w / max(1, cw), avail_h / max(1, ch))
        w, h = cw * scale, ch * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_pixels(self, p: QPointF) -> QPointF:
        t = self.target()
        cw, ch = self.size_px
        x = (p.x() - t.x()) / max(1e-6, t.width()) * cw
        y = (p.y() - t.y()) / max(1e-6, t.height()) * ch
        return QPointF(min(max(x, 0.0), cw), min(max(y, 0.0), ch))

    def from_pixels(self, p: QPointF) -> QPointF:
        t = self.target()
        cw, ch = self.size_px
        return QPointF(t.x() + p.x() / cw * t.width(), t.y() + p.y() / ch * t.height())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        regions.paint_areas(p, self.target(), self.size_px, self.areas, current=self.rect_px)
        p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        """A drag starting inside the rectangle moves it; anywhere else draws a new one."""
        if event.button() != Qt.MouseButton.LeftButton:
            return
        p = self.to_pixels(event.position())
        cw, ch = self.size_px
        r = self.rect_px
        if r.contains(p) and (r.width() < cw or r.height() < ch):  # a whole-canvas area cannot move
            self._move_from = (p, QRectF(self.rect_px))
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        self._anchor = p
        self._drag_to(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self._move_from is not None:
            self._move_to(event.position())
        elif self._anchor is not None:
            self._drag_to(event.position())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self._move_from is not None:
            self._move_to(event.position())
            self._move_from = None
            self.setCursor(Qt.CursorShape.CrossCursor)
            self.released.emit()
        elif self._anchor is not None:
            self._drag_to(event.position())
            self._anchor = None
            self.released.emit()

    def _move_to(self, pos: QPointF) -> None:
        assert self._move_from is not None
        start, rect = self._move_from
        p = self.to_pixels(pos)
        cw, ch = self.size_px
        x = min(max(rect.x() + p.x() - start.x(), 0.0), cw - rect.width())
        y = min(max(rect.y() + p.y() - start.y(), 0.0), ch - rect.height())
        self.rect_px = QRectF(x, y, rect.width(), rect.height())
        self.rectChanged.emit(self.rect_px)
        self.update()

    def _drag_to(self, pos: QPointF) -> None:
        assert self._anchor is not None
        self.rect_px = QRectF(self._anchor, self.to_pixels(pos)).normalized()
        self.rectChanged.emit(self.rect_px)
        self.update()


class AreaEditorDialog(QDialog):
    """Edit one area node.  ``values()`` is what Apply writes; ``apply()`` writes it."""

    def __init__(self, scene: GraphScene, node_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scene, self.node_id = scene, node_id
        node = scene.graph.node(node_id)
        self.spec = scene.spec(node.type)
        self.kind = regions.area_kind(self.spec)
        if self.kind is None:
            raise ValueError(f"node {node_id} has no area to edit")
        found = regions.canvas_size(scene.graph, scene.spec, node_id)
        size = found or regions.fallback_size(scene.graph, scene.spec, node_id)
        self.setWindowTitle(f"Edit area — {scene.node_label(node_id)}")
        areas = regions.graph_areas(scene.graph, scene.spec, size, first=node_id)
        if not areas or areas[0].node_id != node_id:  # a linked value: start from the whole canvas
            areas.insert(0, regions.AreaView(node_id, scene.node_label(node_id), QRectF(0, 0, *size), self.kind))
        self.canvas = AreaCanvas(size, areas, self)
        self.w_box, self.h_box = QSpinBox(self), QSpinBox(self)
        for box, v in ((self.w_box, size[0]), (self.h_box, size[1])):
            box.setRange(8, 16384)
            box.setSingleStep(8)
            box.setValue(v)
            box.valueChanged.connect(self._size_changed)
        where = "from the graph's latent" if found else "no Empty Latent found: assumed"
        self.size_note = QLabel(where, self)
        self.readout = QLabel(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Canvas", self))
        top.addWidget(self.w_box)
        top.addWidget(QLabel("×", self))
        top.addWidget(self.h_box)
        top.addWidget(self.size_note, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Cancel,
                                   parent=self)
        self.apply_button = buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.clicked.connect(self.apply_and_close)
        self.apply_button.setDefault(True)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(QLabel("Drag a rectangle where this prompt should act (drag inside it to move it). "
                             "Other areas of the graph are shown dashed.", self))
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.readout)
        lay.addWidget(buttons)
        self.canvas.rectChanged.connect(lambda _r: self._show_values())
        self.canvas.released.connect(self._snap_shown)
        self._show_values()

    def values(self) -> dict[str, int | float]:
        """The node values for the rectangle drawn (snapped and clamped as the node takes them)."""
        return regions.area_values(self.spec, self.kind, self.canvas.rect_px, self.canvas.size_px)

    def _snap_shown(self) -> None:
        """After a drag, show the rectangle the node will get (snapped to its step)."""
        v = self.values()
        if self.kind == "fractions":
            cw, ch = self.canvas.size_px
            rect = QRectF(v["x"] * cw, v["y"] * ch, v["width"] * cw, v["height"] * ch)
        else:
            rect = QRectF(v["x"], v["y"], v["width"], v["height"])
        self.canvas.rect_px = rect
        self.canvas.update()

    def _size_changed(self) -> None:
        old = self.canvas.size_px
        new = (self.w_box.value(), self.h_box.value())
        if self.kind == "fractions":  # the same fractions of the new canvas
            r = self.canvas.rect_px
            fx, fy = new[0] / old[0], new[1] / old[1]
            self.canvas.rect_px = QRectF(r.x() * fx, r.y() * fy, r.width() * fx, r.height() * fy)
            self.canvas.areas = regions.graph_areas(self.scene.graph, self.scene.spec, new, first=self.node_id) \
                or self.canvas.areas
        self.canvas.set_size(new)
        self._show_values()

    def _show_values(self) -> None:
        v = self.values()
        if self.kind == "fractions":
            text = "  ".join(f"{k} {float(v[k]):.2f}" for k in regions.AREA_KEYS)
        else:
            text = "  ".join(f"{k} {int(v[k])}" for k in regions.AREA_KEYS) + " px"
        self.readout.setText(text)

    def apply(self) -> bool:
        """Write the values through the undo stack (one step); False if unchanged."""
        if self.node_id not in self.scene.graph.nodes:
            return False
        return regions.apply_area(self.scene, self.node_id, self.values())

    def apply_and_close(self) -> None:
        self.apply()
        self.accept()
