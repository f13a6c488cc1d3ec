"""Node search palette: type a few letters, get node types ranked by a fuzzy match
on display name, id and category.  When opened from a dropped wire it lists only
node types that have a compatible port, and reports which port to connect."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from nodegraph import NodeSpec, Registry
from nodegraph.types import compatible


def fuzzy_score(query: str, text: str) -> float | None:
    """Score ``query`` as a subsequence of ``text`` (higher is better), or None.

    Rewards contiguous runs, matches at word starts and an early first match,
    which is what makes "ksa" find "KSampler" before "Mask Sampler Advanced".
    """
    q, t = query.lower(), text.lower()
    if not q:
        return 0.0
    if q in t:
        return 100.0 - t.index(q) + (20.0 if t.startswith(q) else 0.0) - len(t) * 0.05
    score, ti, prev = 0.0, 0, -2
    for ch in q:
        found = t.find(ch, ti)
        if found < 0:
            return None
        boundary = found == 0 or not t[found - 1].isalnum()
        score += 3.0 if found == prev + 1 else 1.0
        score += 2.0 if boundary else 0.0
        prev, ti = found, found + 1
    return score - len(t) * 0.05


@dataclass(frozen=True)
class PortFilter:
    """Only list nodes that can take (``direction="out"``: the wire comes from an
    output of ``type``) or give (``"in"``) a value of this type."""

    direction: str
    type: str

    def port_for(self, spec: NodeSpec) -> str | None:
        """The port of ``spec`` a new node should connect with, or None."""
        if self.direction == "out":
            for i in spec.inputs:
                if compatible(self.type, i.type):
                    return i.name
        else:
            for o in spec.outputs:
                if compatible(o.type, self.type):
                    return o.name
        return None


def search(registry: Registry, query: str, port_filter: PortFilter | None = None,
           limit: int = 50, extra: Iterable[NodeSpec] = ()) -> list[NodeSpec]:
    """Node types matching ``query`` best first (all of them, by category, for an empty query).

    Subgraph components of the registry are listed like installed nodes; ``extra`` adds more
    (the open workflow's own subgraph definitions), which win over a component of the same type."""
    scored: list[tuple[float, str, NodeSpec]] = []
    specs = {s.type_id: s for s in [*registry, *registry.subgraph_specs(), *extra]}
    for spec in specs.values():
        if port_filter is not None and port_filter.port_for(spec) is None:
            continue
        best = None
        for text, bonus in ((spec.display_name, 10.0), (spec.type_id, 0.0), (spec.category, -5.0)):
            s = fuzzy_score(query, text)
            if s is not None and (best is None or s + bonus > best):
                best = s + bonus
        if best is not None:
            scored.append((best, spec.category + spec.display_name, spec))
    if query:
        scored.sort(key=lambda t: (-t[0], t[1]))
    else:
        scored.sort(key=lambda t: t[1])
    return [s for _, _, s in scored[:limit]]


class SearchPalette(QFrame):
    """A floating search box over the canvas.  ``chosen`` carries the node type id."""

    chosen = Signal(str)
    cancelled = Signal()

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("searchPalette")
        self.registry = registry
        self.port_filter: PortFilter | None = None
        # More node types to offer (set by the subgraph editor: the workflow's own definitions).
        self.extra_specs: Callable[[], Iterable[NodeSpec]] = tuple
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.hint = QLabel("")
        self.hint.setStyleSheet("color: #8d9096; font-size: 8pt;")
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Search nodes…")
        self.list = QListWidget()
        lay.addWidget(self.hint)
        lay.addWidget(self.edit)
        lay.addWidget(self.list)
        self.resize(340, 360)
        self.edit.textChanged.connect(self._refresh)
        self.edit.installEventFilter(self)
        self.list.itemActivated.connect(self._activate)
        self.list.itemClicked.connect(self._activate)
        self.hide()

    def open(self, port_filter: PortFilter | None = None) -> None:
        self.port_filter = port_filter
        self.hint.setText(f"nodes that {'accept' if port_filter.direction == 'out' else 'produce'} "
                          f"{port_filter.type}" if port_filter else "all nodes")
        self.edit.blockSignals(True)
        self.edit.clear()
        self.edit.blockSignals(False)
        self._refresh("")
        self.show()
        self.raise_()
        self.edit.setFocus(Qt.FocusReason.PopupFocusReason)

    def _refresh(self, text: str) -> None:
        self.list.clear()
        for spec in search(self.registry, text, self.port_filter, extra=self.extra_specs()):
            item = QListWidgetItem(f"{spec.display_name}    ·  {spec.category}")
            item.setData(Qt.ItemDataRole.UserRole, spec.type_id)
            item.setToolTip(f"{spec.type_id}\n{spec.description}")
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def results(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def _activate(self, item: QListWidgetItem | None = None) -> None:
        item = item or self.list.currentItem()
        if item is None:
            return
        self.hide()
        self.chosen.emit(item.data(Qt.ItemDataRole.UserRole))

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            key = event.key()
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._activate()
                return True
            if key == Qt.Key.Key_Escape:
                self.hide()
                self.cancelled.emit()
                return True
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                row = self.list.currentRow() + (1 if key == Qt.Key.Key_Down else -1)
                if 0 <= row < self.list.count():
                    self.list.setCurrentRow(row)
                return True
        return False
