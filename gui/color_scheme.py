"""Light and dark themes, following the system setting.

:mod:`gui.theme` holds the colours everything paints with (the canvas reads them at
paint time), in their dark values.  This module swaps them for light ones and back:
at start-up from the system's colour scheme (Qt's ``QStyleHints.colorScheme``),
again whenever the system changes it, and on request
(``NODEGRAPH_THEME=light|dark`` overrides the system).  Run-state colours are the
same in both, so a green border means "running" whatever the theme.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QGraphicsItem, QGraphicsView

from . import theme

_CANVAS_KEYS = ("CANVAS_BG", "GRID_MINOR", "GRID_MAJOR", "NODE_BG", "NODE_TITLE_BG", "NODE_BORDER",
                "NODE_SELECTED", "TEXT", "TEXT_DIM", "WIDGET_BG", "WIDGET_BG_LINKED")
DARK: dict[str, QColor] = {k: QColor(getattr(theme, k)) for k in _CANVAS_KEYS}
LIGHT: dict[str, QColor] = {k: QColor(v) for k, v in {
    "CANVAS_BG": "#e9ebef", "GRID_MINOR": "#dfe2e7", "GRID_MAJOR": "#cdd1d8", "NODE_BG": "#fbfbfc",
    "NODE_TITLE_BG": "#d9dee6", "NODE_BORDER": "#a3a9b2", "NODE_SELECTED": "#1f4f9a", "TEXT": "#1d1f23",
    "TEXT_DIM": "#5a5f68", "WIDGET_BG": "#eef0f3", "WIDGET_BG_LINKED": "#e2e5ea"}.items()}

# The dark stylesheet's colours and their light counterparts (same roles, same layout).
_SHEET_LIGHT = {"#222327": "#f3f4f6", "#dcdcdc": "#1d1f23", "#2b2d31": "#e3e6eb", "#b8bbc2": "#3a3e45",
                "#1b1c1f": "#ffffff", "#3a3c42": "#c3c8d0", "#26272b": "#eceef1", "#a0a3aa": "#4a4f57"}
_PALETTE = {
    "dark": {"Window": "#222327", "WindowText": "#dcdcdc", "Base": "#1b1c1f", "AlternateBase": "#26272b",
             "Text": "#dcdcdc", "Button": "#2b2d31", "ButtonText": "#dcdcdc", "Highlight": "#3d6fb4",
             "HighlightedText": "#ffffff", "ToolTipBase": "#2b2d31", "ToolTipText": "#dcdcdc",
             "PlaceholderText": "#7a7d84", "Mid": "#3a3c42"},
    "light": {"Window": "#f3f4f6", "WindowText": "#1d1f23", "Base": "#ffffff", "AlternateBase": "#eceef1",
              "Text": "#1d1f23", "Button": "#e3e6eb", "ButtonText": "#1d1f23", "Highlight": "#3d6fb4",
              "HighlightedText": "#ffffff", "ToolTipBase": "#ffffdc", "ToolTipText": "#1d1f23",
              "PlaceholderText": "#80858d", "Mid": "#c3c8d0"},
}
_DARK_SHEET = theme.STYLESHEET


def light_stylesheet() -> str:
    sheet = _DARK_SHEET
    for dark, light in _SHEET_LIGHT.items():
        sheet = sheet.replace(dark, light)
    return sheet


def system_scheme(app: QApplication) -> str:
    """"light" or "dark": the override in NODEGRAPH_THEME, else the system's (dark when unknown)."""
    forced = os.environ.get("NODEGRAPH_THEME", "").strip().lower()
    if forced in ("light", "dark"):
        return forced
    return "light" if app.styleHints().colorScheme() == Qt.ColorScheme.Light else "dark"


def apply_scheme(app: QApplication, scheme: str) -> None:
    """Switch every colour (canvas, palette, stylesheet) and repaint open canvases."""
    colors = LIGHT if scheme == "light" else DARK
    for key, color in colors.items():
        setattr(theme, key, QColor(color))
    theme.CURRENT_SCHEME = scheme
    pal = QPalette()
    for role, hexcolor in _PALETTE["light" if scheme == "light" else "dark"].items():
        pal.setColor(getattr(QPalette.ColorRole, role), QColor(hexcolor))
    app.setPalette(pal)
    app.setStyleSheet(light_stylesheet() if scheme == "light" else _DARK_SHEET)
    for w in app.allWidgets():
        if isinstance(w, QGraphicsView) and w.scene() is not None:
            w.scene().setBackgroundBrush(theme.CANVAS_BG)
            for item in w.scene().items():  # cached pixmaps hold the old colours: drop them
                mode = item.cacheMode()
                if mode != QGraphicsItem.CacheMode.NoCache:
                    item.setCacheMode(QGraphicsItem.CacheMode.NoCache)
                    item.setCacheMode(mode)
                item.update()
            w.resetCachedContent()
            w.viewport().update()


class SchemeFollower(QObject):
    """Keeps the theme in step with the system's colour scheme while the app runs."""

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self.app = app
        self.scheme = system_scheme(app)
        apply_scheme(app, self.scheme)
        app.styleHints().colorSchemeChanged.connect(self.on_system_changed)

    def on_system_changed(self, scheme: Qt.ColorScheme | None = None) -> None:
        """The system switched (``scheme``: what it switched to; None: ask it)."""
        forced = os.environ.get("NODEGRAPH_THEME", "").strip().lower()
        if forced in ("light", "dark"):
            new = forced
        elif scheme is None:
            new = system_scheme(self.app)
        else:
            new = "light" if scheme == Qt.ColorScheme.Light else "dark"
        if new != self.scheme:
            self.scheme = new
            apply_scheme(self.app, new)


def follow_system(app: QApplication) -> SchemeFollower:
    """Apply the system's scheme now and whenever it changes (kept alive by ``app``)."""
    global _FOLLOWER
    if _FOLLOWER is None or _FOLLOWER.app is not app:
        _FOLLOWER = SchemeFollower(app)
    else:
        apply_scheme(app, _FOLLOWER.scheme)  # theme.apply() just reset the dark colours
    return _FOLLOWER


_FOLLOWER: SchemeFollower | None = None
