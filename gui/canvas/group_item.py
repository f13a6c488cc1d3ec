"""Groups (frames): a titled rectangle behind nodes.  Dragging its title moves
the group *and the nodes inside it*; dragging the corner resizes it.  Both
end in one undoable command, so the model only changes on release."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsSceneMouseEvent,
    QStyleOptionGraphicsItem,
    QWidget,
)

from nodegraph import Group

from .. import theme

if TYPE_CHECKING:
    from .scene import GraphScene

GROUP_TITLE_H = 30.0
HANDLE = 14.0


class GroupItem(QGraphicsItem):
    def __init__(self, group: Group, scene: GraphScene) -> None:
        super().__init__()
        self.group = group
        self._scene = scene
        self.setZValue(-20)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self._drag: tuple[str, QPointF, dict] | None = None
        self.sync()

    @property
    def group_id(self) -> str:
        return self.group.id

    def sync(self) -> None:
        x, y, w, h = self.group.bounds
        self.prepareGeometryChange()
        self.setPos(x, y)
        self._size = (w, h)
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(0, 0, *self._size)

    def title_rect(self) -> QRectF:
        return QRectF(0, 0, self._size[0], GROUP_TITLE_H)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        color = QColor(self.group.color) if self.group.color else theme.GROUP_DEFAULT
        fill = QColor(color)
        fill.setAlpha(45)
        painter.setPen(QPen(color.lighter(130) if self.isSelected() else color, 2 if self.isSelected() else 1))
        painter.setBrush(fill)
        painter.drawRoundedRect(self.boundingRect(), 6, 6)
        title_fill = QColor(color)
        title_fill.setAlpha(150)
        painter.fillRect(self.title_rect().adjusted(1, 1, -1, 0), title_fill)
        painter.setPen(theme.TEXT)
        painter.setFont(theme.ui_font(12, True))
        title_rect = self.title_rect().adjusted(10, 0, -10, 0)
        painter.drawText(title_rect, Qt.AlignmentFlag.AlignVCenter, str(self.group.title))
        w, h = self._size
        painter.setPen(QPen(color.lighter(140), 1.5))
        for k in (4, 8, 12):
            painter.drawLine(QPointF(w - k, h - 2), QPointF(w - 2, h - k))

    # -- interaction: handled here, committed as one command on release ------------------
    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        local = event.pos()
        w, h = self._size
        if QRectF(w - HANDLE, h - HANDLE, HANDLE, HANDLE).contains(local):
            self._drag = ("resize", event.scenePos(), {})
        elif self.title_rect().contains(local):
            inside = self._scene.nodes_inside(self.sceneBoundingRect())
            self._drag = ("move", event.scenePos(), {nid: QPointF(it.pos()) for nid, it in inside.items()})
        else:
            event.ignore()
            return
        if not (event.modifiers() & Qt.KeyboardModifier.ControlModifier):
            self._scene.clearSelection()
        self.setSelected(True)
        event.accept()

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        if self._drag is None:
            return
        kind, start, nodes = self._drag
        d = event.scenePos() - start
        x, y, w, h = self.group.bounds
        if kind == "move":
            self.setPos(x + d.x(), y + d.y())
            for nid, p in nodes.items():
                item = self._scene.node_items.get(nid)
                if item is not None:
                    item.setPos(p + d)
                    self._scene.node_moved(item)
        else:
            self.prepareGeometryChange()
            self._size = (max(120.0, w + d.x()), max(60.0, h + d.y()))
            self.update()

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        if self._drag is None:
            return
        kind, start, nodes = self._drag
        self._drag = None
        d = event.scenePos() - start
        if d.manhattanLength() < 0.5:
            return
        x, y, w, h = self.group.bounds
        if kind == "move":
            starts = {nid: (p.x(), p.y()) for nid, p in nodes.items()}
            self._scene.commit_group_move(self.group.id, (d.x(), d.y()), starts)
        else:
            self._scene.commit_group_resize(self.group.id, (x, y, self._size[0], self._size[1]))
