"""What tells subgraphs apart on the canvas: a badge on every subgraph node's title
bar, and -- inside an opened subgraph -- labels at the inner ports that the
subgraph's interface feeds ("in: model") or exposes ("out: LATENT").  Without
them an inner input fed from outside looks unconnected.

Marks are child items of the node items (they move with them) and are rebuilt
from the model whenever the shown level or the definition changes; they are
decoration only and never take mouse events.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsSimpleTextItem, QStyleOptionGraphicsItem, QWidget
from shiboken6 import isValid

from nodegraph import GraphChange
from nodegraph.subgraph import SubgraphDef, is_instance

from .layout import TITLE_H

ACCENT = QColor("#7fb2ff")


class SubgraphBadge(QGraphicsItem):
    """Two stacked squares at the right of a subgraph node's title ("contains nodes")."""

    SIZE = 12.0

    def __init__(self, parent: QGraphicsItem) -> None:
        super().__init__(parent)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setToolTip("Subgraph: double-click to open")

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(0, 0, self.SIZE + 4, self.SIZE + 4)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setPen(QPen(ACCENT, 1.4))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        s = self.SIZE * 0.7
        painter.drawRoundedRect(QRectF(4, 0.5, s, s), 2, 2)
        painter.setBrush(QColor("#2b2d31"))
        painter.drawRoundedRect(QRectF(0.5, 4, s, s), 2, 2)


class PortLabel(QGraphicsSimpleTextItem):
    """"in: name" left of an inner input / "out: name" right of an inner output."""

    def __init__(self, text: str, parent: QGraphicsItem, anchor: QPointF, left: bool) -> None:
        super().__init__(text, parent)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        f = QFont(self.font())
        f.setPointSizeF(8)
        f.setBold(True)
        self.setFont(f)
        self.setBrush(ACCENT)
        r = self.boundingRect()
        x = anchor.x() - r.width() - 10 if left else anchor.x() + 10
        self.setPos(x, anchor.y() - r.height() / 2)


class SubgraphMarks:
    """Keeps badges and boundary labels in step with the shown graph."""

    def __init__(self, scene: Any, editor: Any) -> None:
        self.scene, self.editor = scene, editor
        self._unsub: Any = None
        self._labels: list[QGraphicsItem] = []
        editor.pathChanged.connect(self.refresh)

    def refresh(self) -> None:
        """The shown level changed (or was redrawn): re-badge and re-label everything."""
        if self._unsub is not None:
            self._unsub()
        self._unsub = self.scene.graph.subscribe(self._on_change)
        for nid in self.scene.node_items:
            self._badge(nid)
        self.label_boundary()

    def _on_change(self, ch: GraphChange) -> None:
        if ch.kind == "node_added" and ch.node_id is not None:
            self._badge(ch.node_id)

    def _badge(self, nid: str) -> None:
        item = self.scene.node_items.get(nid)
        node = self.scene.graph.nodes.get(nid)
        if item is None or node is None or not is_instance(node.type):
            return
        if not any(isinstance(c, SubgraphBadge) for c in item.childItems()):
            badge = SubgraphBadge(item)
            badge.setPos(item.layout.width - SubgraphBadge.SIZE - 10, (TITLE_H - SubgraphBadge.SIZE) / 2 - 1)

    def label_boundary(self) -> None:
        """Label the inner ports the opened definition's interface connects."""
        for lab in self._labels:
            if isValid(lab) and lab.scene() is not None:  # gone with its node item otherwise
                lab.scene().removeItem(lab)
        self._labels = []
        defn: SubgraphDef | None = self.editor.shown_definition()
        if defn is None:
            return
        for nid in self.scene.node_items:  # rows fed by the interface draw as linked
            self.scene._relayout(nid)
        for i in defn.inputs:
            for nid, port in i.targets:
                self._label(nid, "in", port, f"in: {i.name}")
        for o in defn.outputs:
            if o.source is not None:
                self._label(o.source[0], "out", o.source[1], f"out: {o.name}")

    def _label(self, nid: str, direction: str, port: str, text: str) -> None:
        item = self.scene.node_items.get(nid)
        if item is None:
            return
        ports = item.layout.in_ports if direction == "in" else item.layout.out_ports
        anchor = ports.get(port)
        if anchor is None:  # a widget input without a port row: next to the title
            anchor = QPointF(0 if direction == "in" else item.layout.width, TITLE_H / 2)
        self._labels.append(PortLabel(text, item, anchor, left=direction == "in"))
