"""The window's workflow tabs: one :class:`gui.workspace.Workspace` per tab.

Opening a file opens a tab (or reuses the empty, untouched one a fresh window
shows, or switches to the tab that already has that file); closing a tab asks
before unsaved work is lost; the label is the file name with "*" while unsaved.
The paths of the open tabs are remembered (QSettings ``session/*``) so the next
start can open them again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QTabWidget

from nodegraph import Graph

from .workspace import Workspace


class WorkflowTabs(QTabWidget):
    """A tab bar over the open workflows; never empty (closing the last tab leaves an
    untitled one)."""

    def __init__(self, make: Callable[[], Workspace], qsettings: QSettings) -> None:
        super().__init__()
        self._make = make
        self.qsettings = qsettings
        self._spaces: list[Workspace] = []
        self.setDocumentMode(True)
        self.setTabsClosable(True)
        self.setMovable(True)
        self.setUsesScrollButtons(True)
        self.setElideMode(self.tabBar().elideMode().ElideMiddle)
        self.tabCloseRequested.connect(self.close_tab)
        self.tabBar().installEventFilter(self)  # middle click closes a tab, as in browsers
        self.currentChanged.connect(self._on_current_changed)
        self.shownChanged: Callable[[Workspace], None] | None = None  # the window's hook
        self.remember = False  # save the session on changes (off while the window is being built)

    # -- which tabs -----------------------------------------------------------------------------
    def workspaces(self) -> list[Workspace]:
        """In the order the tabs are shown."""
        by_page = {id(ws.page): ws for ws in self._spaces}
        return [by_page[id(self.widget(i))] for i in range(self.count())]

    def current(self) -> Workspace | None:
        page = self.currentWidget()
        for ws in self._spaces:
            if ws.page is page:
                return ws
        return None

    def index_of(self, ws: Workspace) -> int:
        return self.indexOf(ws.page)

    def find(self, path: str | Path) -> Workspace | None:
        """The tab that has ``path`` open as its file, if any."""
        target = Path(path).resolve()
        for ws in self._spaces:
            if ws.document.path is not None and ws.document.path.resolve() == target:
                return ws
        return None

    # -- opening and closing --------------------------------------------------------------------
    def new_tab(self, graph: Graph | None = None) -> Workspace:
        """A new tab (shown at once) with ``graph`` or an empty untitled workflow."""
        ws = self._make()
        self._spaces.append(ws)
        ws.titleChanged.connect(lambda w=ws: self._retitle(w))
        index = self.addTab(ws.page, ws.tab_title())
        ws.document.set_graph(graph if graph is not None else Graph(), None)
        self.setCurrentIndex(index)
        self._retitle(ws)
        return ws

    def target(self) -> tuple[Workspace, bool]:
        """Where a file being opened goes: the shown tab if it is empty and untouched,
        else a new tab.  The flag says whether the tab is new (to close if opening fails)."""
        cur = self.current()
        if cur is not None and cur.untouched():
            return cur, False
        return self.new_tab(), True

    def open_path(self, path: str | Path) -> bool:
        """Open a workflow file in a tab (the file's own tab if it is open already)."""
        existing = self.find(path) if Path(path).suffix.lower() == ".json" else None
        if existing is not None:
            self.setCurrentIndex(self.index_of(existing))
            return True
        before = self.current()
        ws, fresh = self.target()
        if ws.document.open_path(path, ask=False):
            self.save_session()
            return True
        if fresh:
            self.remove(ws)
            if before is not None:
                self.setCurrentIndex(self.index_of(before))
        return False

    def close_tab(self, index: int) -> bool:
        """Close the tab at ``index`` after asking about unsaved changes; False if the
        user cancelled."""
        page = self.widget(index)
        ws = next((w for w in self._spaces if w.page is page), None)
        if ws is None:
            return False
        self.setCurrentIndex(index)  # the question is about the workflow the user sees
        if not ws.document.maybe_discard():
            return False
        self.remove(ws)
        self.save_session()
        return True

    def may_close_all(self) -> bool:
        """Before the window closes: each unsaved workflow asks, shown in its tab."""
        for ws in self.workspaces():
            if ws.document.modified:
                self.setCurrentIndex(self.index_of(ws))
                if not ws.document.maybe_discard():
                    return False
        return True

    def recover(self, ask: Callable[[dict[str, Any]], bool]) -> int:
        """Offer back each recovery file a crashed session left (newest first), each into a tab
        of its own; a declined one is deleted, not offered again.  Returns how many came back."""
        recovered = 0
        while True:
            ws, fresh = self.target()
            info = ws.autosaver.pending()
            if info is not None and ask(info):
                graph, source = ws.autosaver.load()
                ws.document.set_graph(graph, source, modified=True)
                recovered += 1
                continue
            if info is not None:
                ws.autosaver.discard()
            if fresh:
                self.remove(ws)
            if info is None:
                return recovered

    def remove(self, ws: Workspace) -> None:
        """Close ``ws`` without asking (its work was saved, discarded or never existed)."""
        ws.close()
        self._spaces.remove(ws)
        self.removeTab(self.index_of(ws))
        ws.page.deleteLater()
        ws.deleteLater()
        if not self._spaces:
            self.new_tab()

    def step(self, delta: int) -> None:
        """Ctrl+Tab / Ctrl+Shift+Tab: the next / previous tab, wrapping around."""
        if self.count() > 1:
            self.setCurrentIndex((self.currentIndex() + delta) % self.count())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.tabBar() and event.type() == QEvent.Type.MouseButtonRelease \
                and isinstance(event, QMouseEvent) and event.button() == Qt.MouseButton.MiddleButton:
            index = self.tabBar().tabAt(event.position().toPoint())
            if index >= 0:
                self.close_tab(index)
                return True
        return super().eventFilter(obj, event)

    def _retitle(self, ws: Workspace) -> None:
        i = self.index_of(ws)
        if i >= 0:
            self.setTabText(i, ws.tab_title())
            self.setTabToolTip(i, str(ws.document.path) if ws.document.path else "Not saved yet")
            self.save_session()  # saved under a new name

    def _on_current_changed(self, _index: int) -> None:
        ws = self.current()
        if ws is not None and self.shownChanged is not None:
            self.shownChanged(ws)

    # -- the session ----------------------------------------------------------------------------
    def save_session(self) -> None:
        """Remember which files are open (untitled work is kept by crash recovery only)."""
        if not self.remember:
            return
        paths = [str(ws.document.path.resolve()) for ws in self.workspaces() if ws.document.path is not None]
        self.qsettings.setValue("session/tabs", paths)
        cur = self.current()
        self.qsettings.setValue("session/current",
                                str(cur.document.path.resolve()) if cur is not None and cur.document.path else "")

    def restore_session(self) -> int:
        """Open the files the last session had open (those still on disk); returns how many."""
        value = self.qsettings.value("session/tabs", [])
        paths = [value] if isinstance(value, str) else [str(v) for v in (value or [])]
        current = str(self.qsettings.value("session/current", "") or "")  # read first: opening saves
        opened = 0
        for p in paths:
            if Path(p).is_file() and self.open_path(p):
                opened += 1
        ws = self.find(current) if current else None
        if ws is not None:
            self.setCurrentIndex(self.index_of(ws))
        return opened
