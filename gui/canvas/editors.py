"""Inline value editors, created on demand over a widget row.

Nodes *paint* their values; only the row being edited gets a real Qt widget
(a spin box honouring min/max/step, a combo filled from ``choice_list``, a
line or multi-line text box) inside a ``QGraphicsProxyWidget``.  Hundreds of
nodes therefore cost no widgets at all.  Committing pushes one undoable
``SetValueCommand``; Escape cancels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGraphicsProxyWidget,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)

from nodegraph import Input, Widget

from .layout import float_decimals
from .node_item import text_box_height, text_font

if TYPE_CHECKING:
    from .node_item import NodeItem
    from .scene import GraphScene

_INT32 = 2**31 - 1


class ValueEditor(QObject):
    """One open editor: the widget, its proxy, and how to read the value back."""

    def __init__(self, scene: GraphScene, item: NodeItem, inp: Input) -> None:
        super().__init__()
        self.scene = scene
        self.node_id = item.node_id
        self.input = inp
        self.widget = self._make_widget(inp, item.node.values.get(inp.name, inp.default))
        self.widget.installEventFilter(self)
        self.proxy = QGraphicsProxyWidget()
        self.proxy.setWidget(self.widget)
        self.proxy.setZValue(100)
        scene.addItem(self.proxy)
        self._closed = False
        if isinstance(self.widget, QPlainTextEdit):
            # A prompt box grows with its text (the node grows with it) up to a limit, then
            # scrolls: it never spills over the rows below or out of the node.
            self.widget.setFont(text_font())
            self.widget.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
            self.widget.textChanged.connect(self._grow)
            item.relayout()
            scene._update_wires(self.node_id)
        self.place()
        self.widget.setFocus(Qt.FocusReason.MouseFocusReason)
        self.proxy.setFocus(Qt.FocusReason.MouseFocusReason)

    def _make_widget(self, inp: Input, value: Any) -> QWidget:
        w = inp.widget
        if w is Widget.FLOAT:
            sb = QDoubleSpinBox()
            sb.setDecimals(float_decimals(inp.step))
            sb.setRange(inp.min if inp.min is not None else -1e12, inp.max if inp.max is not None else 1e12)
            sb.setSingleStep(inp.step or 0.01)
            sb.setValue(float(value or 0))
            sb.editingFinished.connect(self.commit)
            sb.selectAll()
            return sb
        if w is Widget.INT and (inp.min is None or inp.min >= -_INT32) and (inp.max is None or inp.max <= _INT32):
            sb = QSpinBox()
            lo = int(inp.min) if inp.min is not None else -_INT32
            sb.setRange(lo, int(inp.max) if inp.max is not None else _INT32)
            sb.setSingleStep(int(inp.step or 1))
            sb.setValue(int(value or 0))
            sb.editingFinished.connect(self.commit)
            sb.selectAll()
            return sb
        if w is Widget.COMBO:
            cb = QComboBox()
            try:
                choices = inp.choice_list(self.scene.settings)
            except Exception:  # a broken provider must not stop editing
                choices = []
            cb.addItems(choices)
            if value is not None and value not in choices:
                cb.addItem(str(value))
            if value is not None:
                cb.setCurrentText(str(value))
            cb.currentIndexChanged.connect(lambda _i: self.commit())
            return cb
        if inp.multiline:
            te = QPlainTextEdit()
            te.setPlainText(str(value or ""))
            return te
        le = QLineEdit(str(value if value is not None else ""))
        le.selectAll()
        le.editingFinished.connect(self.commit)
        return le

    def content_height(self) -> float:
        """Height the text being edited needs (read by the node's layout)."""
        item = self.scene.node_items.get(self.node_id)
        width = item.layout.width if item is not None else 230.0
        return text_box_height(self.widget.toPlainText(), width, text_font()) + 6  # type: ignore[attr-defined]

    def place(self) -> None:
        """Cover the row being edited exactly."""
        item = self.scene.node_items.get(self.node_id)
        if item is None:
            return
        row = next((r for r in item.layout.rows if r.kind == "widget" and r.input is self.input), None)
        if row is None:
            return
        rect = row.rect.adjusted(8, 0, -8, 0)
        self.proxy.setPos(item.mapToScene(rect.topLeft()))
        self.widget.resize(int(rect.width()), int(max(rect.height(), 22)))

    def _grow(self) -> None:
        item = self.scene.node_items.get(self.node_id)
        if item is None or self._closed:
            return
        before = item.layout.height
        item.relayout()
        if item.layout.height != before:
            self.scene._update_wires(self.node_id)
            self.place()

    def value(self) -> Any:
        w = self.widget
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.interpretText()
            return w.value()
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, QPlainTextEdit):
            return w.toPlainText()
        text = w.text()  # type: ignore[attr-defined]
        if self.input.widget in (Widget.INT, Widget.SEED):
            try:
                v = int(text.strip())
            except ValueError:
                return None
            if self.input.min is not None:
                v = max(int(self.input.min), v)
            if self.input.max is not None:
                v = min(int(self.input.max), v)
            return v
        return text

    def commit(self) -> None:
        if self._closed:
            return
        if self.scene.editor is self:
            self.scene.close_editor(commit=True)

    def close(self, commit: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if commit and self.node_id in self.scene.graph.nodes:
            value = self.value()
            if value is not None:
                self.scene.set_value(self.node_id, self.input.name, value)
        self.widget.removeEventFilter(self)
        self.scene.removeItem(self.proxy)
        self.proxy.deleteLater()
        item = self.scene.node_items.get(self.node_id)
        if isinstance(self.widget, QPlainTextEdit) and item is not None:
            item.relayout()  # back to the height of the (committed or restored) text
            self.scene._update_wires(self.node_id)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() == Qt.Key.Key_Escape:
                self.scene.close_editor(commit=False)
                return True
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and isinstance(obj, QPlainTextEdit) \
                    and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.commit()
                return True
        elif event.type() == QEvent.Type.FocusOut and isinstance(obj, QPlainTextEdit):
            self.commit()
        return False


def open_editor(scene: GraphScene, item: NodeItem, inp: Input) -> ValueEditor:
    scene.close_editor(commit=True)
    ed = ValueEditor(scene, item, inp)
    scene.editor = ed
    if isinstance(ed.widget, QComboBox) and ed.widget.count() > 1:
        ed.widget.showPopup()
    return ed
