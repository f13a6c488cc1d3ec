"""Wires: cubic curves from an output port to an input port, coloured by type."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem, QWidget

from nodegraph import Link


def wire_path(a: QPointF, b: QPointF) -> QPainterPath:
    """A horizontal-tangent cubic (the look node editors share): the handles grow
    with the distance so short wires stay tight and long ones do not kink."""
    dx = max(40.0, abs(b.x() - a.x()) * 0.5, min(200.0, abs(b.y() - a.y()) * 0.35))
    path = QPainterPath(a)
    path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


class WireItem(QGraphicsPathItem):
    """View of one :class:`nodegraph.Link` (or, with ``link=None``, the wire being dragged)."""

    def __init__(self, link: Link | None, color: QColor) -> None:
        super().__init__()
        self.link = link
        self.color = color
        self.dimmed = False
        self.setZValue(-1 if link is not None else 10)
        if link is not None:
            self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self._shape: QPainterPath | None = None
        self._path = QPainterPath()
        self._bounds = QRectF()
        self._pen = QPen(color, 2.2, Qt.PenStyle.SolidLine if link is not None else Qt.PenStyle.DashLine,
                         Qt.PenCapStyle.RoundCap)

    def set_ends(self, a: QPointF, b: QPointF) -> None:
        """Route the curve between scene points ``a`` and ``b`` (the item back at the origin:
        a drag of both its nodes may have shifted it, see GraphScene.mouseMoveEvent)."""
        if not self.pos().isNull():
            self.setPos(0.0, 0.0)
        self._shape = None
        self._path = wire_path(a, b)
        self.setPath(self._path)
        self._bounds = self._path.boundingRect().adjusted(-4, -4, 4, 4)

    def set_dimmed(self, dimmed: bool) -> None:
        self.dimmed = dimmed
        color = QColor(self.color)
        if dimmed:
            color.setAlpha(90)
        self._pen.setColor(color)
        self.update()

    def shape(self) -> QPainterPath:
        if self._shape is None:
            stroker = QPainterPathStroker()
            stroker.setWidth(10)
            self._shape = stroker.createStroke(self.path())
        return self._shape

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return self._bounds

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, painter.worldTransform().m11() > 0.3)
        if self.isSelected():
            painter.setPen(QPen(QColor("#ffffff"), 5.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
            painter.drawPath(self._path)
        painter.setPen(self._pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self._path)
