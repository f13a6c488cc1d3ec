"""The breadcrumb bar over the canvas: where the canvas is (the workflow, or a
subgraph opened inside it, nested to any depth), and a click to go back up."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget


class BreadcrumbBar(QWidget):
    """``Workflow > Hires fix > Sharpen``; ``levelClicked(depth)`` (0 = the workflow).
    Hidden at the top level, where there is nothing to go back to."""

    levelClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("breadcrumb")
        self.setStyleSheet("#breadcrumb { background: #2b2d31; border-bottom: 1px solid #3a3d42; }")
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(8, 3, 8, 3)
        self._layout.setSpacing(2)
        self.buttons: list[QToolButton] = []
        self.hide()

    def set_path(self, labels: list[str]) -> None:
        while self._layout.count():
            w = self._layout.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.buttons = []
        for depth, text in enumerate(labels):
            if depth:
                self._layout.addWidget(QLabel(">"))
            b = QToolButton()
            b.setText(text)
            b.setAutoRaise(True)
            last = depth == len(labels) - 1
            b.setEnabled(not last)
            if last:
                f = b.font()
                f.setBold(True)
                b.setFont(f)
            b.clicked.connect(lambda _=False, d=depth: self.levelClicked.emit(d))
            self._layout.addWidget(b)
            self.buttons.append(b)
        hint = QLabel("   Esc: up one level")
        hint.setStyleSheet("color: #8d9096;")
        self._layout.addWidget(hint)
        self._layout.addStretch(1)
        self.setVisible(len(labels) > 1)
