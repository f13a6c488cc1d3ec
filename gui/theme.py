"""Dark theme: the palette, the stylesheet and the colours the canvas paints with.

Kept in one place so the canvas, panels and screenshots agree, and so a node's
state colours (queued/running/…) mean the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QFont, QFontDatabase, QPalette
from PySide6.QtWidgets import QApplication

FONT_DIR = Path(__file__).with_name("fonts")
FONT_FAMILY = "DejaVu Sans"

# -- canvas ----------------------------------------------------------------------------------
CANVAS_BG = QColor("#1b1c1f")
GRID_MINOR = QColor("#232428")
GRID_MAJOR = QColor("#2c2d33")
NODE_BG = QColor("#2b2d31")
NODE_TITLE_BG = QColor("#383b42")
NODE_BORDER = QColor("#121315")
NODE_SELECTED = QColor("#f0f0f0")
TEXT = QColor("#dcdcdc")
TEXT_DIM = QColor("#8d9096")
WIDGET_BG = QColor("#1f2023")
WIDGET_BG_LINKED = QColor("#26272b")
ERROR = QColor("#ff4d4f")
BYPASS_TINT = QColor(160, 70, 200, 110)
MUTE_OPACITY = 0.35
PROGRESS = QColor("#4caf50")
GROUP_DEFAULT = QColor("#3f5a78")

STATE_COLORS: dict[str, QColor] = {
    "queued": QColor("#c9a227"),
    "running": QColor("#4caf50"),
    "cached": QColor("#26a69a"),
    "executed": QColor("#2e7d32"),
    "error": ERROR,
    "skipped": QColor("#6d6f75"),
}

STYLESHEET = """
QWidget { font-family: "DejaVu Sans"; font-size: 10pt; }
QMainWindow, QDockWidget, QWidget#panel { background: #222327; color: #dcdcdc; }
QDockWidget::title { background: #2b2d31; padding: 4px 8px; color: #b8bbc2; }
QTreeWidget, QListWidget, QLineEdit, QPlainTextEdit, QSpinBox, QDoubleSpinBox, QComboBox {
    background: #1b1c1f; color: #dcdcdc; border: 1px solid #3a3c42; border-radius: 3px;
    selection-background-color: #3d6fb4;
}
QLineEdit:focus, QPlainTextEdit:focus, QSpinBox:focus, QDoubleSpinBox:focus { border: 1px solid #5b8ed6; }
QMenuBar, QMenu { background: #26272b; color: #dcdcdc; }
QMenu::item:selected, QMenuBar::item:selected { background: #3d6fb4; }
QToolBar { background: #26272b; border: none; spacing: 4px; padding: 2px; }
QToolButton { color: #dcdcdc; padding: 3px 8px; border-radius: 3px; }
QToolButton:hover { background: #3a3c42; }
QStatusBar { background: #26272b; color: #a0a3aa; }
QFrame#searchPalette { background: #26272b; border: 1px solid #5b8ed6; border-radius: 6px; }
QProgressBar { background: #1b1c1f; border: 1px solid #3a3c42; border-radius: 3px; color: #dcdcdc;
               text-align: center; }
QProgressBar::chunk { background: #4caf50; }
"""


def load_fonts() -> str:
    """Register the bundled DejaVu fonts so a machine with no system fonts still
    renders text, and return the family name to use."""
    for ttf in sorted(FONT_DIR.glob("*.ttf")):
        QFontDatabase.addApplicationFont(str(ttf))
    return FONT_FAMILY


def ui_font(point_size: float = 9.0, bold: bool = False) -> QFont:
    f = QFont(FONT_FAMILY)
    f.setPointSizeF(point_size)
    f.setBold(bold)
    return f


def apply(app: QApplication) -> None:
    """Fusion style + dark palette + stylesheet + bundled font."""
    load_fonts()
    app.setStyle("Fusion")
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#222327", QPalette.ColorRole.WindowText: "#dcdcdc",
        QPalette.ColorRole.Base: "#1b1c1f", QPalette.ColorRole.AlternateBase: "#26272b",
        QPalette.ColorRole.Text: "#dcdcdc", QPalette.ColorRole.Button: "#2b2d31",
        QPalette.ColorRole.ButtonText: "#dcdcdc", QPalette.ColorRole.Highlight: "#3d6fb4",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#2b2d31",
        QPalette.ColorRole.ToolTipText: "#dcdcdc", QPalette.ColorRole.PlaceholderText: "#7a7d84",
    }
    for role, color in roles.items():
        pal.setColor(role, QColor(color))
    app.setPalette(pal)
    app.setFont(ui_font(10))
    app.setStyleSheet(STYLESHEET)
