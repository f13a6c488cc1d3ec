"""The state-colour legend: what each node border colour means, in the status bar."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from .. import theme

# In the order a run goes through them; the words the user reads.
LEGEND = (("queued", "queued"), ("running", "running"), ("executed", "done"), ("cached", "cached"),
          ("skipped", "skipped"), ("error", "error"))


class StateLegend(QWidget):
    """A swatch and a word per run state, the colours the canvas uses for node borders."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        row.setSpacing(4)
        self.swatches: dict[str, QLabel] = {}
        for state, word in LEGEND:
            sw = QLabel()
            sw.setFixedSize(10, 10)
            sw.setStyleSheet(f"background: {QColor(theme.STATE_COLORS[state]).name()}; border-radius: 2px;")
            sw.setToolTip(f"node border while {word}")
            row.addWidget(sw, 0, Qt.AlignmentFlag.AlignVCenter)
            label = QLabel(word)
            row.addWidget(label)
            row.addSpacing(6)
            self.swatches[state] = sw
        self.setToolTip("Node border colours during and after a run")

    def color_of(self, state: str) -> QColor:
        """The swatch colour shown for ``state`` (what tests compare with the canvas)."""
        css = self.swatches[state].styleSheet()
        return QColor(css.split("background:")[1].split(";")[0].strip())
