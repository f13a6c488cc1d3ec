"""Node library: every installed node type, by category; drag one onto the
canvas (or double-click it) to add it."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QDrag
from PySide6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from nodegraph import Registry

from ..canvas.view import NODE_MIME
from ..search import fuzzy_score


class _Tree(QTreeWidget):
    def startDrag(self, actions: Qt.DropAction) -> None:  # noqa: N802 - Qt API
        item = self.currentItem()
        type_id = item.data(0, Qt.ItemDataRole.UserRole) if item else None
        if not type_id:
            return
        md = QMimeData()
        md.setData(NODE_MIME, type_id.encode())
        drag = QDrag(self)
        drag.setMimeData(md)
        drag.exec(Qt.DropAction.CopyAction)


class LibraryPanel(QWidget):
    addRequested = Signal(str)

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        self.registry = registry
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter nodes…")
        self.tree = _Tree()
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        lay.addWidget(self.filter)
        lay.addWidget(self.tree)
        self.filter.textChanged.connect(self._rebuild)
        self.tree.itemDoubleClicked.connect(self._double)
        self._rebuild("")

    def _rebuild(self, text: str) -> None:
        self.tree.clear()
        folders: dict[str, QTreeWidgetItem] = {}
        for category, specs in self.registry.categories().items():
            specs = [s for s in specs if not text or fuzzy_score(text, s.display_name) is not None
                     or fuzzy_score(text, s.type_id) is not None]
            if not specs:
                continue
            parent: QTreeWidgetItem | None = None
            path = ""
            for part in category.split("/"):
                path = f"{path}/{part}" if path else part
                if path not in folders:
                    folder = QTreeWidgetItem([part])
                    folder.setFlags(folder.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
                    (parent.addChild(folder) if parent else self.tree.addTopLevelItem(folder))
                    folders[path] = folder
                parent = folders[path]
            for spec in specs:
                leaf = QTreeWidgetItem([spec.display_name])
                leaf.setData(0, Qt.ItemDataRole.UserRole, spec.type_id)
                leaf.setToolTip(0, f"{spec.type_id}\n{spec.description}")
                parent.addChild(leaf)  # type: ignore[union-attr]
        self.tree.expandAll()

    def type_ids(self) -> list[str]:
        out = []
        it = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while it:
            node = it.pop(0)
            tid = node.data(0, Qt.ItemDataRole.UserRole)
            if tid:
                out.append(tid)
            it.extend(node.child(i) for i in range(node.childCount()))
        return out

    def _double(self, item: QTreeWidgetItem) -> None:
        tid = item.data(0, Qt.ItemDataRole.UserRole)
        if tid:
            self.addRequested.emit(tid)
