"""Problems panel: validation issues and run errors, each naming node, input,
what is wrong and how to fix it.  Clicking one selects (and frames) the node."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from nodegraph import ValidationIssue


class Problem:
    """One line of the panel (a validation issue or a run error)."""

    def __init__(self, node_id: str | None, input: str | None, message: str, fix: str = "",
                 source: str = "validation") -> None:
        self.node_id, self.input, self.message, self.fix, self.source = node_id, input, message, fix, source

    @classmethod
    def from_issue(cls, issue: ValidationIssue) -> Problem:
        return cls(issue.node_id, issue.input, issue.message, issue.fix, "validation")

    def text(self, label: Callable[[str], str] | None = None) -> str:
        """One line for the panel; ``label`` turns a node id into what the user calls the
        node (its title or type name): ids mean nothing to them."""
        name = (label or str)(self.node_id) if self.node_id else ""
        where = f"{name}{' › ' + self.input if self.input else ''}: " if self.node_id else ""
        fix = f"  → {self.fix}" if self.fix else ""
        return f"{'✖' if self.source == 'run' else '⚠'} {where}{self.message}{fix}"


class ProblemsPanel(QWidget):
    nodeClicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        lay.addWidget(self.list)
        self.list.itemClicked.connect(self._clicked)
        self.problems: list[Problem] = []

    def set_problems(self, problems: list[Problem], label: Callable[[str], str] | None = None) -> None:
        self.problems = list(problems)
        self.list.clear()
        for p in self.problems:
            item = QListWidgetItem(p.text(label))
            item.setData(Qt.ItemDataRole.UserRole, p.node_id)
            item.setForeground(QColor("#ff7875") if p.source == "run" else QColor("#ffc069"))
            self.list.addItem(item)

    def _clicked(self, item: QListWidgetItem) -> None:
        nid = item.data(Qt.ItemDataRole.UserRole)
        if nid:
            self.nodeClicked.emit(nid)
