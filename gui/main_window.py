"""The editor window: canvas, panels, menus and the status bar, wired together.

Several workflows can be open, one per tab (:class:`gui.tabs.WorkflowTabs`); each
tab is a :class:`gui.workspace.Workspace` with its own scene, undo stack and
these collaborators:

* :class:`gui.document.Document` — open/save/recent files/autosave/recovery;
* :class:`gui.run_presenter.RunPresenter` — validation and run events → canvas,
  Problems panel, gallery, status bar;
* :class:`gui.edit_actions.EditActions` — the editing verbs on the selection.

``win.scene``, ``win.view``, ``win.undo``, ``win.document`` … are the shown tab's.
The window owns what is shared: menus (acting on the shown tab), docks, status
bar, and the one runner whose worker owns the executor.

Dialogs are reached through small ``ask_*`` methods so that tests (and other
front-ends) can answer them without a modal loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence, QShowEvent, QUndoGroup
from PySide6.QtWidgets import (
    QDialog,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
)

from nodegraph import Executor, Graph, Registry

from . import preferences
from .clipboard import read_clipboard
from .default_workflow import default_graph
from .image_import import ImageImporter
from .layout_actions import arrange_nodes
from .node_style import GRID, NODE_COLORS, paste_with_links, set_color
from .panels.gallery import GalleryPanel
from .panels.legend import StateLegend
from .panels.library import LibraryPanel
from .panels.problems import Problem, ProblemsPanel
from .panels.queue import QueuePanel, make_store
from .runner import RunController
from .subgraph_actions import SubgraphActions
from .tabs import WorkflowTabs
from .workspace import Workspace


class MainWindow(QMainWindow):
    def __init__(self, registry: Registry, *, settings: Mapping[str, Any] | None = None,
                 executor: Executor | None = None, output_dir: str | Path = "output",
                 recovery_path: Path | None = None, qsettings: QSettings | None = None,
                 autosave_ms: int = 30_000, validate_ms: int = 250, history_path: Path | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.settings = dict(settings or {})
        self.qsettings = qsettings or QSettings("nodegraph", "nodegraph")
        self.executor = executor or Executor(registry, output_dir=output_dir, settings=self.settings)
        self.runner = RunController(self.executor, self)  # one worker for every tab's runs
        preferences.apply_stored(self)  # threads / cache budget kept in QSettings (gui/preferences.py)
        self.undo_group = QUndoGroup(self)  # Undo/Redo act on the shown tab's stack
        self.history_store = make_store(history_path)
        self.last_error = ""
        self.last_info = ""
        self.quiet = False  # True: no modal error dialogs (tests, scripted use)
        self._pending_dialogs: list[tuple[str, str, str]] = []
        self.images = ImageImporter(self)

        def make_workspace() -> Workspace:
            ws = Workspace(self, recovery_path=recovery_path, autosave_ms=autosave_ms, validate_ms=validate_ms)
            self.undo_group.addStack(ws.undo)
            ws.titleChanged.connect(lambda: self._update_title() if self.is_current(ws) else None)
            ws.document.recentChanged.connect(self._update_recent_menu)
            return ws

        self.tabs = WorkflowTabs(make_workspace, self.qsettings)
        self.tabs.shownChanged = self._on_tab_shown
        self.setCentralWidget(self.tabs)
        self._build_panels()
        self._build_status()
        self.tabs.new_tab()
        self._build_actions()
        self.runner.queueChanged.connect(lambda n: self.queue_label.setText(f"{n} queued" if n else ""))
        self.runner.busyChanged.connect(self.progress.setVisible)
        self.runner.runFinished.connect(self._on_run_finished)
        self.resize(*initial_size(self.screen()))
        self._update_title()
        self.tabs.remember = True

    # -- the shown tab ---------------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace:
        """The tab on screen (there is always one)."""
        ws = self.tabs.current()
        assert ws is not None
        return ws

    def is_current(self, ws: Workspace) -> bool:
        cur = self.tabs.current()
        return cur is None or cur is ws  # None: the first tab is being built

    scene = property(lambda self: self.workspace.scene, doc="The shown tab's scene.")
    view = property(lambda self: self.workspace.view)
    undo = property(lambda self: self.workspace.undo)
    document = property(lambda self: self.workspace.document)
    edits = property(lambda self: self.workspace.edits)
    presenter = property(lambda self: self.workspace.presenter)
    subgraph_actions = property(lambda self: self.workspace.subgraph_actions)
    minimap = property(lambda self: self.workspace.minimap)
    autosaver = property(lambda self: self.workspace.autosaver)

    def _on_tab_shown(self, ws: Workspace) -> None:
        self.undo_group.setActiveStack(ws.undo)
        ws.shown()
        self._update_title()
        self.tabs.save_session()

    def _on_run_finished(self, _report: Any) -> None:
        if getattr(self.runner.signal_owner, "closed", False):  # its tab is gone: nobody else says it ended
            self.status_label.setText("Run of a closed tab cancelled")

    def new_tab(self, graph: Graph | None = None) -> Workspace:
        """Ctrl+T: another workflow beside the open ones."""
        ws = self.tabs.new_tab(graph)
        ws.view.setFocus()
        return ws

    def close_tab(self, index: int | None = None) -> bool:
        """Ctrl+W: close the shown tab (or tab ``index``), asking before unsaved work is lost."""
        return self.tabs.close_tab(self.tabs.currentIndex() if index is None else index)

    # -- construction -----------------------------------------------------------------------
    def _build_panels(self) -> None:
        self.library = LibraryPanel(self.registry)
        self.library.addRequested.connect(
            lambda t: self.view.add_node(t, self.view.mapToScene(self.view.viewport().rect().center())))
        self.problems = ProblemsPanel()
        self.problems.nodeClicked.connect(self.focus_node)
        self.gallery = GalleryPanel()
        self.gallery.openWorkflow.connect(lambda p: self.open_path(p))
        self.queue_panel = QueuePanel(self, self.history_store)
        for title, widget, area in (("Nodes", self.library, Qt.DockWidgetArea.LeftDockWidgetArea),
                                    ("Problems", self.problems, Qt.DockWidgetArea.BottomDockWidgetArea),
                                    ("Gallery", self.gallery, Qt.DockWidgetArea.RightDockWidgetArea),
                                    ("Queue", self.queue_panel, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock_{title}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            setattr(self, f"dock_{title.lower()}", dock)
        self.resizeDocks([self.dock_problems], [110], Qt.Orientation.Vertical)  # type: ignore[attr-defined]
        self.resizeDocks([self.dock_nodes, self.dock_gallery], [220, 240],  # type: ignore[attr-defined]
                         Qt.Orientation.Horizontal)

    def _action(self, text: str, slot: Any, shortcut: Any = None, menu: Any = None) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(s) for s in seqs])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.triggered.connect(lambda _checked=False, f=slot: f())  # never pass `checked` on
        self.addAction(act)
        if menu is not None:
            menu.addAction(act)
        return act

    def _build_actions(self) -> None:
        mb = self.menuBar()
        m_file = mb.addMenu("&File")
        self.act_new = self._action("New", lambda: self.document.new(), QKeySequence.StandardKey.New, m_file)
        self.act_new_tab = self._action("New Tab", self.new_tab, "Ctrl+T", m_file)
        self.act_open = self._action("Open…", self.open_dialog, QKeySequence.StandardKey.Open, m_file)
        self.recent_menu = m_file.addMenu("Open Recent")
        self._action("Open Default Workflow", lambda: self.new_tab(default_graph()), None, m_file)
        m_file.addSeparator()
        self.act_save = self._action("Save", self.save, QKeySequence.StandardKey.Save, m_file)
        self.act_save_as = self._action("Save As…", self.save_as, "Ctrl+Shift+S", m_file)
        m_file.addSeparator()
        self.act_close_tab = self._action("Close Tab", self.close_tab, "Ctrl+W", m_file)
        self._action("Next Tab", lambda: self.tabs.step(1), ["Ctrl+Tab", "Ctrl+PgDown"], m_file)
        # One spelling per key: Qt matches "Ctrl+Shift+Tab" to the Ctrl+Shift+Backtab an X11 keyboard sends, and a
        # second spelling of the same keys ("Ctrl+Backtab") made the shortcut ambiguous, so it never fired there
        self._action("Previous Tab", lambda: self.tabs.step(-1), ["Ctrl+Shift+Tab", "Ctrl+PgUp"], m_file)
        self._action("Quit", self.close, "Ctrl+Q", m_file)
        self._build_edit_menu(mb.addMenu("&Edit"))
        self._build_node_menu(mb.addMenu("&Node"))
        self._build_view_menu(mb.addMenu("&View"))

        m_run = mb.addMenu("&Run")
        self.act_run = self._action("Queue Run", self.run, [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")],
                                    m_run)
        self.act_cancel = self._action("Cancel Run", lambda: self.runner.cancel(), QKeySequence("Ctrl+Shift+X"),
                                       m_run)
        self._action("Cancel Run and Clear Queue", lambda: self.runner.cancel(clear_queue=True), None, m_run)

        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar_main")
        tb.setMovable(False)
        for a in (self.act_new_tab, self.act_open, self.act_save):
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.act_run)
        tb.addAction(self.act_cancel)
        self._update_recent_menu()

    def _build_edit_menu(self, m_edit: Any) -> None:
        def ed(verb: str, *args: Any) -> Any:  # the shown tab's verb, looked up when chosen
            return lambda: getattr(self.edits, verb)(*args)

        undo = self.undo_group.createUndoAction(self, "Undo")
        undo.setShortcuts([QKeySequence("Ctrl+Z")])
        redo = self.undo_group.createRedoAction(self, "Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for a in (undo, redo):
            self.addAction(a)
            m_edit.addAction(a)
        m_edit.addSeparator()
        self._action("Copy", self.copy, QKeySequence("Ctrl+C"), m_edit)
        self._action("Paste", self.paste_any, QKeySequence("Ctrl+V"), m_edit)
        self._action("Paste with Links", lambda: paste_with_links(self.edits, read_clipboard()),
                     QKeySequence("Ctrl+Shift+V"), m_edit)
        self._action("Duplicate", ed("duplicate"), QKeySequence("Ctrl+D"), m_edit)
        self._action("Delete", ed("delete_selection"), [QKeySequence("Delete"), QKeySequence("Backspace")], m_edit)
        self._action("Select All", ed("select_all"), QKeySequence("Ctrl+A"), m_edit)
        m_edit.addSeparator()
        self._action("Add Node…", lambda: self.view.open_search(self.view.mapToScene(
            self.view.viewport().rect().center())), None, m_edit)
        m_edit.addSeparator()
        self._action("Preferences…", lambda: preferences.edit(self), "Ctrl+,", m_edit)

    def _build_node_menu(self, m_node: Any) -> None:
        def ed(verb: str, *args: Any) -> Any:
            return lambda: getattr(self.edits, verb)(*args)

        self._action("Bypass", ed("toggle_mode", "bypass"), QKeySequence("Ctrl+B"), m_node)
        self._action("Mute", ed("toggle_mode", "mute"), QKeySequence("Ctrl+M"), m_node)
        self._action("Collapse", ed("toggle_collapse"), QKeySequence("Alt+C"), m_node)
        self._action("Rename…", ed("rename_selected"), QKeySequence("F2"), m_node)
        self._action("Group", ed("group_selection"), QKeySequence("Ctrl+G"), m_node)
        m_align = m_node.addMenu("Align")
        for label, how in (("Left", "left"), ("Right", "right"), ("Top", "top"), ("Bottom", "bottom"),
                           ("Centre Horizontally", "hcenter"), ("Centre Vertically", "vcenter"),
                           ("Distribute Horizontally", "distribute_h"), ("Distribute Vertically", "distribute_v")):
            self._action(label, ed("align_selection", how), None, m_align)
        SubgraphActions.build_menu(self, m_node)
        self.act_arrange = self._action("Arrange", self.arrange, QKeySequence("Ctrl+L"), m_node)
        m_color = m_node.addMenu("Colour")
        for label, color in NODE_COLORS.items():
            self._action(label, lambda c=color: set_color(self.scene, self.undo, c), None, m_color)

    def _build_view_menu(self, m_view: Any) -> None:
        self._action("Frame Selection", lambda: self.view.frame_selection(), QKeySequence("F"), m_view)
        self._action("Frame All", lambda: self.view.frame_all(), QKeySequence("Home"), m_view)
        self._action("Zoom In", lambda: self.view.set_zoom(self.view.zoom() * 1.2), QKeySequence("Ctrl+="), m_view)
        self._action("Zoom Out", lambda: self.view.set_zoom(self.view.zoom() / 1.2), QKeySequence("Ctrl+-"), m_view)
        self.act_snap = self._action("Snap to Grid", self.toggle_snap, None, m_view)
        self.act_snap.setCheckable(True)
        self.act_snap.setChecked(self.qsettings.value("snap_to_grid", False, type=bool))
        for ws in self.tabs.workspaces():
            ws.scene.snap_grid = self.snap_grid()
        m_view.addSeparator()
        for dock in (self.dock_nodes, self.dock_problems, self.dock_gallery,  # type: ignore[attr-defined]
                     self.dock_queue):  # type: ignore[attr-defined]
            m_view.addAction(dock.toggleViewAction())

    def _build_status(self) -> None:
        self.status_label = QLabel("Ready")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.queue_label = QLabel("")
        self.legend = StateLegend()
        sb = self.statusBar()
        sb.addPermanentWidget(self.legend)
        # Run state sits on the right, so temporary messages on the left never overlap it.
        sb.addPermanentWidget(self.status_label)
        sb.addPermanentWidget(self.queue_label)
        sb.addPermanentWidget(self.progress)

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.document.recent_files()
        for r in recent:
            act = self.recent_menu.addAction(r)
            act.triggered.connect(lambda _=False, path=r: self.open_path(path))
        self.recent_menu.setEnabled(bool(recent))

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.document.display_name()}[*] — nodegraph")
        self.setWindowModified(self.document.modified)

    # -- the window's public API (used by app.py, tests and scripts) ------------------------------
    @property
    def graph(self) -> Graph:
        """The document's graph (the canvas may be showing a subgraph's inside)."""
        return self.scene.root

    @property
    def path(self) -> Path | None:
        return self.document.path

    @property
    def modified(self) -> bool:
        return self.document.modified

    @property
    def last_report(self) -> Any:
        return self.presenter.last_report

    def set_graph(self, graph: Graph, path: str | Path | None, *, modified: bool = False) -> None:
        self.document.set_graph(graph, path, modified=modified)

    def open_path(self, path: str | Path, *, ask: bool = True) -> bool:
        """Open a workflow in a tab of its own (or the empty untouched one, or the tab that
        has the file already).  Nothing open is replaced, so ``ask`` is no longer needed."""
        return self.tabs.open_path(path)

    def open_dialog(self) -> None:
        path = self.ask_open_path()
        if path:
            self.open_path(path)

    def open_graph(self, graph: Graph) -> Workspace:
        """Show ``graph`` as an untitled workflow in a tab (the empty untouched one or a new one)."""
        ws, _fresh = self.tabs.target()
        ws.document.set_graph(graph, None)
        return ws

    def save(self) -> bool:
        return self.document.save()

    def save_as(self) -> bool:
        return self.document.save_as()

    def recent_files(self) -> list[str]:
        return self.document.recent_files()

    def offer_recovery(self) -> bool:
        """At start-up: offer back each workflow a crashed session left unsaved, one tab each."""
        recovered = self.tabs.recover(self.ask_recover)
        if recovered:
            self.statusBar().showMessage(f"Recovered unsaved work ({recovered} workflow(s))", 6000)
        return recovered > 0

    def restore_session(self) -> int:
        """Open again the files the last session had open in tabs; returns how many."""
        return self.tabs.restore_session()

    def revalidate(self) -> list[Problem]:
        return self.presenter.revalidate()

    def run(self) -> int:
        return self.presenter.run()

    def copy(self) -> None:
        n = self.edits.copy()
        if n:
            self.statusBar().showMessage(f"Copied {n} node(s)", 3000)

    def paste(self, doc: dict[str, Any] | None = None, at: QPointF | None = None) -> list[str]:
        return self.edits.paste(doc, at)

    def paste_any(self) -> None:
        """Ctrl+V: nodes if the clipboard holds a workflow fragment, else a picture as a
        Load Image node (stored in the input folder off the UI thread)."""
        if self.edits.paste():
            return
        md = QGuiApplication.clipboard().mimeData()
        if md is not None and md.hasImage():
            image = QGuiApplication.clipboard().image()
            if not image.isNull():
                self.images.paste_image(image, self.view._last_scene_pos)

    def align_selection(self, how: str) -> None:
        self.edits.align_selection(how)

    def focus_node(self, nid: str) -> None:
        self.subgraph_actions.focus(nid)  # a path id ("outer/inner") opens the subgraphs on the way

    def toggle_snap(self) -> None:
        """Snap dragged nodes to the canvas grid (remembered between sessions)."""
        on = self.act_snap.isChecked()
        for ws in self.tabs.workspaces():
            ws.scene.snap_grid = GRID if on else 0.0
        self.qsettings.setValue("snap_to_grid", on)

    def snap_grid(self) -> float:
        act = getattr(self, "act_snap", None)
        on = act.isChecked() if act is not None else self.qsettings.value("snap_to_grid", False, type=bool)
        return GRID if on else 0.0

    def arrange(self) -> int:
        """Lay out the selection (or everything) left to right by dependency; undoable."""
        n = arrange_nodes(self.scene, self.undo)
        self.statusBar().showMessage(f"Arranged {n} node(s)" if n else "Already arranged", 3000)
        return n

    # -- dialogs (replaced by tests and scripted front-ends) -----------------------------------
    def ask_save_changes(self) -> str:
        """"save" | "discard" | "cancel" — asked before unsaved changes would be lost."""
        res = QMessageBox.question(
            self, "Unsaved changes", f"Save changes to {self.document.display_name()} before continuing?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            res, "cancel")

    def show_error(self, title: str, message: str) -> None:
        """Tell the user something failed (status bar always; a dialog unless quiet)."""
        self.last_error = message
        self.statusBar().showMessage(f"{title}: {message}", 8000)
        self._dialog("warning", title, message)

    def show_info(self, title: str, message: str) -> None:
        """Report something worth reading (e.g. what a ComfyUI import could not map)."""
        self.last_info = message
        self.statusBar().showMessage(f"{title}: {message.splitlines()[0]}", 8000)
        self._dialog("information", title, message)

    def _dialog(self, kind: str, title: str, message: str) -> None:
        """Show now, or, before the window is on screen (a bad file named on the command
        line is opened before ``show()``), as soon as it is."""
        if self.quiet:
            return
        if self.isVisible():
            self.present_message(kind, title, message)
        else:
            self._pending_dialogs.append((kind, title, message))

    def present_message(self, kind: str, title: str, message: str) -> None:
        """The modal box itself ("warning" | "information"); tests replace this."""
        getattr(QMessageBox, kind)(self, title, message)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self._pending_dialogs:
            QTimer.singleShot(0, self._flush_dialogs)

    def _flush_dialogs(self) -> None:
        pending, self._pending_dialogs = self._pending_dialogs, []
        for kind, title, message in pending:
            self._dialog(kind, title, message)

    def ask_recover(self, info: Mapping[str, Any]) -> bool:
        src = info.get("source") or "an untitled workflow"
        return QMessageBox.question(
            self, "Recover unsaved work",
            f"nodegraph did not close cleanly. Recover unsaved changes to {src}?") == \
            QMessageBox.StandardButton.Yes

    def ask_preferences(self, prefs: preferences.Preferences) -> preferences.Preferences | None:
        dialog = preferences.PreferencesDialog(prefs, self)
        return dialog.preferences() if dialog.exec() == QDialog.DialogCode.Accepted else None

    def ask_open_path(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, "Open workflow", str(self.document.last_dir()),
                                              "Workflows and images (*.json *.png);;All files (*)")
        return path or None

    def ask_save_path(self) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, "Save workflow", str(self.document.last_dir() / "workflow.json"),
                                              "Workflow (*.json)")
        return path or None

    # -- closing ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if not self.tabs.may_close_all():
            event.ignore()
            return
        self.tabs.save_session()
        # Never block here: a node that cannot be interrupted (a checkpoint load) would
        # freeze the closing window.  The run is cancelled and the worker detached; the
        # process waits for it only after the window is gone (gui.runner._DETACHED).
        self.runner.shutdown(timeout_ms=100)
        self.images.shutdown()
        self.queue_panel.shutdown()
        for ws in self.tabs.workspaces():
            ws.close()
        event.accept()

    def shutdown(self) -> None:
        """Stop the worker without asking (tests, and the crash path): recovery files stay."""
        self.runner.shutdown()
        self.images.shutdown()
        self.queue_panel.shutdown()
        for ws in self.tabs.workspaces():
            ws.close(clean=False)


#: The window's preferred first size, and room kept for the window manager's title bar and panels.
PREFERRED_SIZE = (1500, 900)
DECORATION_MARGIN = 64


def initial_size(screen: Any) -> tuple[int, int]:
    """The first window size: the preferred one, shrunk to the screen's free area so that a
    1366×768 laptop shows the status bar and the right-hand panels instead of cutting them off."""
    w, h = PREFERRED_SIZE
    if screen is None:
        return w, h
    area = screen.availableGeometry()
    return min(w, area.width() - 16), min(h, area.height() - DECORATION_MARGIN)
