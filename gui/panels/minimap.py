"""Minimap: a small overview of the whole graph in a corner of the canvas, with
the visible area outlined; click or drag in it to move there.

The overview is a picture of the scene, re-rendered at most a few times a second
while the graph changes, not a second live view: a live view repaints every node
and wire on every change (each mouse move of a drag), which on a 500-node graph
cost as much as the canvas itself.  The outline of the visible area is drawn over
the picture on every repaint of the canvas, so it follows pans and zooms at once.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap, QShowEvent
from PySide6.QtWidgets import QWidget

from .. import theme
from ..canvas.view import GraphView

REDRAW_MS = 200  # the overview lags a change by at most this much


class Minimap(QWidget):
    def __init__(self, main_view: GraphView, parent: QWidget | None = None) -> None:
        super().__init__(parent or main_view)
        self.main_view = main_view
        self.scene = main_view.gscene
        self.setFixedSize(220, 140)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._picture: QPixmap | None = None
        self._stale = False  # changed while hidden (see redraw)
        self._source = QRectF()  # the scene rectangle the picture shows
        self._target = QRectF()  # where inside this widget it is drawn
        # One refit per burst of changes, not per change: a paste of 500 nodes notifies
        # ~1,100 times and each refit unites every node's rectangle (O(n) -> O(n^2) total).
        self._refit_timer = QTimer(self)
        self._refit_timer.setSingleShot(True)
        self._refit_timer.setInterval(0)
        self._refit_timer.timeout.connect(self.refit)
        self._redraw_timer = QTimer(self)  # throttles re-rendering while items move
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self.redraw)
        self.scene.graphChanged.connect(self._refit_timer.start)
        self.scene.changed.connect(self._scene_changed)
        self._viewport = main_view.viewport()
        main_view.installEventFilter(self)
        self._viewport.installEventFilter(self)
        self.refits = 0  # how many times the overview was refitted (diagnostics, tests)
        self.redraws = 0  # how many times the picture was rendered

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        kind = event.type()
        if kind == QEvent.Type.Paint and obj is self._viewport:
            self.update()  # the visible-area outline follows pans and zooms (a blit and a rectangle)
        elif kind == QEvent.Type.Resize and obj is self.main_view:
            self.place()  # the visible-area outline follows pans and zooms (a blit and a rectangle)
        return False

    def place(self) -> None:
        """Bottom-right corner of the canvas."""
        v = self.main_view  # we are a child of the view: its size is current during its Resize event
        self.move(v.width() - self.width() - 14, v.height() - self.height() - 14)
        self.refit()

    def refit(self) -> None:
        """Show the whole graph again (after nodes were added, removed or moved)."""
        self._refit_timer.stop()
        self.refits += 1
        rect = self.scene.nodes_rect()
        self._source = QRectF() if rect.isEmpty() else rect.adjusted(-80, -80, 80, 80)
        self.redraw()

    def _scene_changed(self, _regions: object) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def redraw(self) -> None:
        """Render the scene into the overview picture (when on screen: see showEvent)."""
        self._redraw_timer.stop()
        if not self.isVisible():  # a tab in the background (a run there changes it): drawn when shown
            self._stale = True
            return
        self._stale = False
        self.redraws += 1
        ratio = self.devicePixelRatioF()
        pm = QPixmap(int(self.width() * ratio), int(self.height() * ratio))
        pm.setDevicePixelRatio(ratio)
        pm.fill(theme.CANVAS_BG.darker(115))
        self._target = QRectF()
        if not self._source.isEmpty():
            s = self._source
            scale = min(self.width() / s.width(), self.height() / s.height())
            w, h = s.width() * scale, s.height() * scale
            self._target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
            painter = QPainter(pm)
            self.scene.render(painter, self._target, s, Qt.AspectRatioMode.IgnoreAspectRatio)
            painter.end()
        self._picture = pm
        self.update()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self._stale:
            self.redraw()

    def shown_rect(self) -> QRectF:
        """The scene rectangle the overview shows."""
        return QRectF(self._source)

    def to_scene(self, p: QPointF) -> QPointF:
        """A point of this widget in scene coordinates."""
        t, s = self._target, self._source
        if t.isEmpty():
            return QPointF()
        return QPointF(s.left() + (p.x() - t.left()) * s.width() / t.width(),
                       s.top() + (p.y() - t.top()) * s.height() / t.height())

    def _from_scene(self, r: QRectF) -> QRectF:
        t, s = self._target, self._source
        kx, ky = t.width() / s.width(), t.height() / s.height()
        return QRectF(t.left() + (r.left() - s.left()) * kx, t.top() + (r.top() - s.top()) * ky,
                      r.width() * kx, r.height() * ky)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        if self._picture is not None:
            painter.drawPixmap(0, 0, self._picture)
        else:
            painter.fillRect(self.rect(), theme.CANVAS_BG.darker(115))
        if not self._target.isEmpty():
            mv = self.main_view
            visible = self._from_scene(mv.mapToScene(mv.viewport().rect()).boundingRect())
            painter.setClipRect(QRectF(self.rect()))
            painter.setPen(QPen(QColor("#5b8ed6"), 1))
            painter.setBrush(QColor(91, 142, 214, 40))
            painter.drawRect(visible)
        painter.setClipping(False)
        painter.setPen(QPen(QColor("#3a3c42"), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5))
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if not self._target.isEmpty():
            self.main_view.centerOn(self.to_scene(event.position()))
            self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.mousePressEvent(event)
