"""Minimap: a small overview of the whole graph in a corner of the canvas, with
the visible area outlined; click or drag in it to move there."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import QGraphicsView, QWidget

from ..canvas.view import GraphView


class Minimap(QGraphicsView):
    def __init__(self, main_view: GraphView, parent: QWidget | None = None) -> None:
        super().__init__(main_view.gscene, parent or main_view)
        self.main_view = main_view
        self.setInteractive(False)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFixedSize(220, 140)
        self.setStyleSheet("background: rgba(20,21,24,220); border: 1px solid #3a3c42; border-radius: 4px;")
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheNone)
        # One refit per burst of changes, not per change: a paste of 500 nodes notifies
        # ~1,100 times and each refit unites every node's rectangle (O(n) -> O(n^2) total).
        self._refit_timer = QTimer(self)
        self._refit_timer.setSingleShot(True)
        self._refit_timer.setInterval(0)
        self._refit_timer.timeout.connect(self.refit)
        main_view.gscene.graphChanged.connect(self._refit_timer.start)
        main_view.installEventFilter(self)
        self.refits = 0  # how many times the overview was refitted (diagnostics, tests)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.main_view and event.type() == QEvent.Type.Resize:
            self.place()
        return False

    def place(self) -> None:
        """Bottom-right corner of the canvas."""
        v = self.main_view  # we are a child of the view: its size is current during its Resize event
        self.move(v.width() - self.width() - 14, v.height() - self.height() - 14)
        self.refit()

    def refit(self) -> None:
        self._refit_timer.stop()
        self.refits += 1
        rect = self.main_view.gscene.nodes_rect()
        if not rect.isEmpty():
            self.fitInView(rect.adjusted(-80, -80, 80, 80), Qt.AspectRatioMode.KeepAspectRatio)

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 - Qt API
        painter.fillRect(rect, QColor(20, 21, 24))

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 - Qt API
        visible = self.main_view.mapToScene(self.main_view.viewport().rect()).boundingRect()
        painter.setPen(QPen(QColor("#5b8ed6"), 0))
        painter.setBrush(QColor(91, 142, 214, 40))
        painter.drawRect(visible)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.main_view.centerOn(self.mapToScene(event.position().toPoint()))
        self.viewport().update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.mousePressEvent(event)
