"""The editor window: canvas, panels, actions, files, runs, autosave.

Dialogs are reached through small ``ask_*`` methods so that tests (and other
front-ends) can answer them without a modal loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QImage, QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
)

from nodegraph import (
    Executor,
    Graph,
    NodeError,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    Registry,
    RunFinished,
    RunStarted,
    WorkflowFileError,
    save_workflow,
    validate,
)
from nodegraph.open import open_any

from . import commands as cmd
from .alignment import align
from .autosave import Autosaver
from .canvas import GraphScene, GraphView
from .canvas.group_item import GROUP_TITLE_H
from .clipboard import copy_to_clipboard, fragment, fragment_origin, read_clipboard
from .default_workflow import default_graph
from .panels.gallery import GalleryPanel
from .panels.library import LibraryPanel
from .panels.minimap import Minimap
from .panels.problems import Problem, ProblemsPanel
from .runner import RunController
from .seeds import next_seeds

MAX_RECENT = 10


class MainWindow(QMainWindow):
    def __init__(self, registry: Registry, *, settings: Mapping[str, Any] | None = None,
                 executor: Executor | None = None, output_dir: str | Path = "output",
                 recovery_path: Path | None = None, qsettings: QSettings | None = None,
                 autosave_ms: int = 30_000, validate_ms: int = 250) -> None:
        super().__init__()
        self.registry = registry
        self.settings = dict(settings or {})
        self.qsettings = qsettings or QSettings("nodegraph", "nodegraph")
        self.path: Path | None = None
        self.undo = QUndoStack(self)
        self.scene = GraphScene(registry, self.undo, self.settings)
        self.view = GraphView(self.scene)
        self.setCentralWidget(self.view)
        self.minimap = Minimap(self.view)
        self.executor = executor or Executor(registry, output_dir=output_dir, settings=self.settings)
        self.runner = RunController(self.executor, self)
        self.autosaver = Autosaver(recovery_path, autosave_ms, self)
        self._validation: list[Problem] = []
        self._run_problems: list[Problem] = []
        self._run_graph: Graph | None = None
        self._validate_timer = QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(validate_ms)
        self._validate_timer.timeout.connect(self.revalidate)
        self.last_report: Any = None
        self.last_error = ""
        self.quiet = False  # True: no modal error dialogs (tests, scripted use)

        self._build_panels()
        self._build_actions()
        self._build_status()
        self.scene.graphChanged.connect(self._on_graph_changed)
        self.undo.cleanChanged.connect(self._on_clean_changed)
        self.view.filesDropped.connect(self._on_files_dropped)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.view.statusMessage.connect(lambda m: self.statusBar().showMessage(m, 4000))
        self.runner.event.connect(self._on_run_event)
        self.runner.invalid.connect(self._on_run_invalid)
        self.runner.failed.connect(lambda m: self._add_run_problem(Problem(None, None, m, source="run")))
        self.runner.runFinished.connect(self._on_run_finished)
        self.runner.queueChanged.connect(self._on_queue_changed)
        self.runner.busyChanged.connect(self._on_busy_changed)
        self.resize(1500, 900)
        self.set_graph(Graph(), None)

    # -- construction -----------------------------------------------------------------------
    def _build_panels(self) -> None:
        self.library = LibraryPanel(self.registry)
        self.library.addRequested.connect(
            lambda t: self.view.add_node(t, self.view.mapToScene(self.view.viewport().rect().center())))
        self.problems = ProblemsPanel()
        self.problems.nodeClicked.connect(self.focus_node)
        self.gallery = GalleryPanel()
        self.gallery.openWorkflow.connect(lambda p: self.open_path(p))
        for title, widget, area in (("Nodes", self.library, Qt.DockWidgetArea.LeftDockWidgetArea),
                                    ("Problems", self.problems, Qt.DockWidgetArea.BottomDockWidgetArea),
                                    ("Gallery", self.gallery, Qt.DockWidgetArea.RightDockWidgetArea)):
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
        self.act_new = self._action("New", self.new_document, QKeySequence.StandardKey.New, m_file)
        self.act_open = self._action("Open…", self.open_dialog, QKeySequence.StandardKey.Open, m_file)
        self.recent_menu = m_file.addMenu("Open Recent")
        self._action("Open Default Workflow", lambda: self.maybe_discard() and self.set_graph(default_graph(), None),
                     None, m_file)
        m_file.addSeparator()
        self.act_save = self._action("Save", self.save, QKeySequence.StandardKey.Save, m_file)
        self.act_save_as = self._action("Save As…", self.save_as, "Ctrl+Shift+S", m_file)
        m_file.addSeparator()
        self._action("Quit", self.close, QKeySequence.StandardKey.Quit, m_file)

        m_edit = mb.addMenu("&Edit")
        undo = self.undo.createUndoAction(self, "Undo")
        undo.setShortcuts([QKeySequence("Ctrl+Z")])
        redo = self.undo.createRedoAction(self, "Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for a in (undo, redo):
            self.addAction(a)
            m_edit.addAction(a)
        m_edit.addSeparator()
        self._action("Copy", self.copy, QKeySequence("Ctrl+C"), m_edit)
        self._action("Paste", self.paste, QKeySequence("Ctrl+V"), m_edit)
        self._action("Duplicate", self.duplicate, QKeySequence("Ctrl+D"), m_edit)
        self._action("Delete", self.delete_selection, [QKeySequence("Delete"), QKeySequence("Backspace")], m_edit)
        self._action("Select All", self.select_all, QKeySequence("Ctrl+A"), m_edit)
        m_edit.addSeparator()
        self._action("Add Node…", lambda: self.view.open_search(self.view.mapToScene(
            self.view.viewport().rect().center())), None, m_edit)

        m_node = mb.addMenu("&Node")
        self._action("Bypass", lambda: self.toggle_mode("bypass"), QKeySequence("Ctrl+B"), m_node)
        self._action("Mute", lambda: self.toggle_mode("mute"), QKeySequence("Ctrl+M"), m_node)
        self._action("Collapse", self.toggle_collapse, QKeySequence("Alt+C"), m_node)
        self._action("Rename…", self.rename_selected, QKeySequence("F2"), m_node)
        self._action("Group", lambda: self.group_selection(), QKeySequence("Ctrl+G"), m_node)
        m_align = m_node.addMenu("Align")
        for label, how in (("Left", "left"), ("Right", "right"), ("Top", "top"), ("Bottom", "bottom"),
                           ("Centre Horizontally", "hcenter"), ("Centre Vertically", "vcenter"),
                           ("Distribute Horizontally", "distribute_h"), ("Distribute Vertically", "distribute_v")):
            self._action(label, lambda h=how: self.align_selection(h), None, m_align)

        m_view = mb.addMenu("&View")
        self._action("Frame Selection", self.view.frame_selection, QKeySequence("F"), m_view)
        self._action("Frame All", self.view.frame_all, QKeySequence("Home"), m_view)
        self._action("Zoom In", lambda: self.view.set_zoom(self.view.zoom() * 1.2), QKeySequence("Ctrl+="), m_view)
        self._action("Zoom Out", lambda: self.view.set_zoom(self.view.zoom() / 1.2), QKeySequence("Ctrl+-"), m_view)
        m_view.addSeparator()
        for dock in (self.dock_nodes, self.dock_problems, self.dock_gallery):  # type: ignore[attr-defined]
            m_view.addAction(dock.toggleViewAction())

        m_run = mb.addMenu("&Run")
        self.act_run = self._action("Queue Run", self.run, [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")],
                                    m_run)
        self.act_cancel = self._action("Cancel Run", lambda: self.runner.cancel(), QKeySequence("Ctrl+Shift+X"),
                                       m_run)
        self._action("Cancel Run and Clear Queue", lambda: self.runner.cancel(clear_queue=True), None, m_run)

        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar_main")
        tb.setMovable(False)
        for a in (self.act_new, self.act_open, self.act_save):
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.act_run)
        tb.addAction(self.act_cancel)
        self._update_recent_menu()

    def _build_status(self) -> None:
        self.status_label = QLabel("Ready")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.queue_label = QLabel("")
        sb = self.statusBar()
        # Run state sits on the right, so temporary messages on the left never overlap it.
        sb.addPermanentWidget(self.status_label)
        sb.addPermanentWidget(self.queue_label)
        sb.addPermanentWidget(self.progress)

    def _place_minimap(self) -> None:
        self.minimap.place()

    # -- document ---------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self.scene.graph

    def set_graph(self, graph: Graph, path: str | Path | None, *, modified: bool = False) -> None:
        self.scene.set_graph(graph)
        self.undo.clear()
        self.path = Path(path) if path else None
        self._run_problems = []
        self.autosaver.track(graph, str(self.path) if self.path else None)
        if modified:
            # Recovered work: unsaved by definition.  A no-op command makes the stack dirty
            # without inventing an edit the user could undo.
            self.undo.push(_Marker())
        self._update_title()
        self.revalidate()
        QTimer.singleShot(0, self.view.frame_all)
        self.view.frame_all()
        self._place_minimap()

    def _update_title(self) -> None:
        name = self.path.name if self.path else "Untitled"
        self.setWindowTitle(f"{name}[*] — nodegraph")
        self.setWindowModified(not self.undo.isClean())

    def _on_clean_changed(self, clean: bool) -> None:
        self.setWindowModified(not clean)
        self.autosaver.mark_dirty(not clean)

    @property
    def modified(self) -> bool:
        return not self.undo.isClean()

    def ask_save_changes(self) -> str:
        """"save" | "discard" | "cancel" — asked before unsaved changes would be lost."""
        res = QMessageBox.question(
            self, "Unsaved changes", "Save changes to this workflow before continuing?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            res, "cancel")

    def show_error(self, title: str, message: str) -> None:
        """Tell the user something failed (status bar always; a dialog when shown)."""
        self.last_error = message
        self.statusBar().showMessage(f"{title}: {message}", 8000)
        if self.isVisible() and not self.quiet:
            QMessageBox.warning(self, title, message)

    def show_info(self, title: str, message: str) -> None:
        """Report something worth reading (e.g. what a ComfyUI import could not map)."""
        self.last_info = message
        self.statusBar().showMessage(f"{title}: {message.splitlines()[0]}", 8000)
        if self.isVisible() and not self.quiet:
            QMessageBox.information(self, title, message)

    def ask_recover(self, info: Mapping[str, Any]) -> bool:
        src = info.get("source") or "an untitled workflow"
        return QMessageBox.question(
            self, "Recover unsaved work",
            f"nodegraph did not close cleanly. Recover unsaved changes to {src}?") == \
            QMessageBox.StandardButton.Yes

    def ask_open_path(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, "Open workflow", str(self._last_dir()),
                                              "Workflows and images (*.json *.png);;All files (*)")
        return path or None

    def ask_save_path(self) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, "Save workflow", str(self._last_dir() / "workflow.json"),
                                              "Workflow (*.json)")
        return path or None

    def _last_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def maybe_discard(self) -> bool:
        """True if it is fine to replace the current document."""
        if not self.modified:
            return True
        answer = self.ask_save_changes()
        if answer == "save":
            return self.save()
        return answer == "discard"

    def new_document(self) -> None:
        if self.maybe_discard():
            self.autosaver.discard()
            self.set_graph(Graph(), None)

    def open_dialog(self) -> None:
        if not self.maybe_discard():
            return
        path = self.ask_open_path()
        if path:
            self.open_path(path, ask=False)

    def open_path(self, path: str | Path, *, ask: bool = True) -> bool:
        """Open a workflow: ours (.json or a PNG we wrote) or ComfyUI's (UI/API JSON or PNG).

        Imported files and PNGs are not where we save to, so they open as untitled."""
        if ask and not self.maybe_discard():
            return False
        p = Path(path)
        try:
            graph, notes = open_any(p)
        except (WorkflowFileError, ValueError, OSError) as exc:
            self.show_error("Cannot open", str(exc))
            return False
        native = not notes and p.suffix.lower() == ".json"
        self.set_graph(graph, p if native else None)
        if notes:
            self.show_info("Imported", "\n".join(notes))
        self._add_recent(p)
        self.autosaver.discard()
        self.statusBar().showMessage(f"Opened {p}", 4000)
        return True

    def save(self) -> bool:
        if self.path is None:
            return self.save_as()
        return self._write(self.path)

    def save_as(self) -> bool:
        path = self.ask_save_path()
        if not path:
            return False
        p = Path(path)
        if p.suffix.lower() != ".json":
            p = p.with_suffix(".json")
        return self._write(p)

    def _write(self, path: Path) -> bool:
        try:
            save_workflow(self.graph, path)
        except OSError as exc:
            self.show_error("Cannot save", f"{path}: {exc}")
            return False
        self.path = path
        self.undo.setClean()
        self.autosaver.track(self.graph, str(path))
        self.autosaver.discard()
        self._add_recent(path)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def recent_files(self) -> list[str]:
        value = self.qsettings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _add_recent(self, path: Path) -> None:
        p = str(Path(path).resolve())
        items = [p] + [r for r in self.recent_files() if r != p]
        self.qsettings.setValue("recent", items[:MAX_RECENT])
        self._update_recent_menu()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        for r in self.recent_files():
            act = self.recent_menu.addAction(r)
            act.triggered.connect(lambda _=False, path=r: self.open_path(path))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    def offer_recovery(self) -> bool:
        """At start-up: if the last session left unsaved work, offer it back."""
        info = self.autosaver.pending()
        if info is None:
            return False
        if not self.ask_recover(info):
            self.autosaver.discard()
            return False
        graph, source = self.autosaver.load()
        self.set_graph(graph, source, modified=True)
        self.statusBar().showMessage("Recovered unsaved work", 6000)
        return True

    def _on_files_dropped(self, paths: list[str]) -> None:
        for p in paths:
            if p.lower().endswith((".json", ".png")):
                self.open_path(p)
                return

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if not self.maybe_discard():
            event.ignore()
            return
        self.runner.shutdown()
        self.autosaver.discard()
        event.accept()

    def shutdown(self) -> None:
        """Stop the worker without asking (tests, and the crash path)."""
        self.runner.shutdown()
        self.autosaver.timer.stop()

    # -- editing ----------------------------------------------------------------------------
    def _on_graph_changed(self) -> None:
        self._validate_timer.start()
        self.autosaver.mark_dirty(self.modified)

    def select_all(self) -> None:
        for item in self.scene.node_items.values():
            item.setSelected(True)

    def copy(self) -> None:
        ids = self.scene.selected_node_ids()
        if ids:
            copy_to_clipboard(fragment(self.graph, ids, self.scene.selected_group_ids()))
            self.statusBar().showMessage(f"Copied {len(ids)} node(s)", 3000)

    def paste(self, doc: dict[str, Any] | None = None, at: QPointF | None = None) -> list[str]:
        doc = doc if doc is not None else read_clipboard()
        if not doc or not doc.get("nodes"):
            return []
        target = at if at is not None else self.view._last_scene_pos
        ox, oy = fragment_origin(doc)
        command = cmd.AddFragmentCommand(self.graph, doc, (target.x() - ox, target.y() - oy))
        self.undo.push(command)
        ids = list(command.new_ids.values())
        self.scene.select_nodes(ids)
        return ids

    def duplicate(self) -> list[str]:
        ids = self.scene.selected_node_ids()
        if not ids:
            return []
        doc = fragment(self.graph, ids)
        ox, oy = fragment_origin(doc)
        return self.paste(json.loads(json.dumps(doc)), QPointF(ox + 40, oy + 40))

    def delete_selection(self) -> None:
        ids = self.scene.selected_node_ids()
        wires = [w.link for w in self.scene.selected_wires() if w.link.dst not in ids and w.link.src not in ids]
        groups = self.scene.selected_group_ids()
        if not (ids or wires or groups):
            return
        self.undo.beginMacro("Delete")
        for lk in wires:
            self.undo.push(cmd.DisconnectCommand(self.graph, lk.dst, lk.dst_input))
        if ids:
            self.undo.push(cmd.RemoveNodesCommand(self.graph, ids))
        for gid in groups:
            self.undo.push(cmd.RemoveGroupCommand(self.graph, gid))
        self.undo.endMacro()

    def toggle_mode(self, mode: str) -> None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return
        target = "normal" if all(self.graph.node(n).mode == mode for n in ids) else mode
        self.undo.push(cmd.SetModeCommand(self.graph, ids, target))

    def toggle_collapse(self) -> None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return
        collapse = not all(self.graph.node(n).ui.get("collapsed") for n in ids)
        self.undo.beginMacro("Collapse" if collapse else "Expand")
        for nid in ids:
            self.undo.push(cmd.SetUiCommand(self.graph, nid, "collapsed", collapse))
        self.undo.endMacro()

    def rename_selected(self) -> None:
        ids = self.scene.selected_node_ids()
        groups = self.scene.selected_group_ids()
        if len(ids) == 1:
            node = self.graph.node(ids[0])
            text, ok = QInputDialog.getText(self, "Rename node", "Title:", text=node.title or "")
            if ok:
                self.undo.push(cmd.SetTitleCommand(self.graph, ids[0], text or None))
        elif len(groups) == 1:
            g = self.graph.groups[groups[0]]
            text, ok = QInputDialog.getText(self, "Rename group", "Title:", text=g.title)
            if ok and text:
                self.undo.push(cmd.UpdateGroupCommand(self.graph, g.id, title=text))

    def group_selection(self, title: str = "Group") -> str | None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return None
        r = self.scene.nodes_rect(ids).adjusted(-20, -20 - GROUP_TITLE_H, 20, 20)
        command = cmd.AddGroupCommand(self.graph, title, (r.x(), r.y(), r.width(), r.height()))
        self.undo.push(command)
        return command.gid

    def align_selection(self, how: str) -> None:
        ids = self.scene.selected_node_ids()
        rects = {}
        for nid in ids:
            it = self.scene.node_items[nid]
            rects[nid] = it.mapRectToScene(0, 0, it.layout.width, it.layout.height)
        moves = align(rects, how)
        if moves:
            self.undo.push(cmd.MoveCommand(self.graph, moves, text=f"Align {how}"))

    def _context_menu(self, pos: Any) -> None:
        """Right-click: node actions on a node (selecting it first), else "add node"."""
        item = self.view.node_at(pos)
        menu = QMenu(self)
        if item is not None:
            if not item.isSelected():
                self.scene.select_nodes([item.node_id])
            for text, fn in (("Bypass", lambda: self.toggle_mode("bypass")), ("Mute", lambda: self.toggle_mode("mute")),
                             ("Collapse", self.toggle_collapse), ("Rename…", self.rename_selected),
                             ("Duplicate", self.duplicate), ("Group", lambda: self.group_selection()),
                             ("Delete", self.delete_selection)):
                menu.addAction(text).triggered.connect(lambda _=False, f=fn: f())
        else:
            scene_pos = self.view.mapToScene(pos)
            menu.addAction("Add Node…").triggered.connect(lambda _=False: self.view.open_search(scene_pos))
            menu.addAction("Paste").triggered.connect(lambda _=False: self.paste(at=scene_pos))
            menu.addAction("Frame All").triggered.connect(lambda _=False: self.view.frame_all())
        menu.popup(self.view.viewport().mapToGlobal(pos))

    def focus_node(self, nid: str) -> None:
        if nid in self.scene.node_items:
            self.scene.select_nodes([nid])
            self.view.centerOn(self.scene.node_items[nid].sceneBoundingRect().center())

    # -- validation + problems ----------------------------------------------------------------
    def revalidate(self) -> list[Problem]:
        try:
            issues = validate(self.graph, self.registry, scope="all", settings=self.settings)
        except Exception as exc:  # the editor must keep working even if validation has a bug
            issues = []
            self.statusBar().showMessage(f"validation failed: {exc}", 5000)
        self._validation = [Problem.from_issue(i) for i in issues if i.kind != "no_outputs"]
        self._show_problems()
        return self._validation

    def _show_problems(self) -> None:
        problems = self._run_problems + self._validation
        self.problems.set_problems(problems)
        by_node: dict[str, list[tuple[str | None, str]]] = {}
        for p in problems:
            if p.node_id:
                by_node.setdefault(p.node_id, []).append((p.input, p.message))
        self.scene.set_issues(by_node)
        self.dock_problems.setWindowTitle(f"Problems ({len(problems)})" if problems else "Problems")  # type: ignore

    def _add_run_problem(self, p: Problem) -> None:
        self._run_problems.append(p)
        self._show_problems()

    # -- running ------------------------------------------------------------------------------
    def run(self) -> int:
        """Queue a run of the current graph (a snapshot: keep editing meanwhile)."""
        self.scene.close_editor(commit=True)
        job = self.runner.submit(self.graph)
        self.status_label.setText("Queued" if self.runner.busy else "Starting…")
        self._advance_seeds()
        return job

    def _advance_seeds(self) -> None:
        """Seed control ("increment"/"randomize"…) is applied once the run has taken its
        snapshot, as ComfyUI does after queueing: the run uses the seed shown when Run
        was pressed, and runs queued back to back each get a new seed (applying it only
        when a run *finishes* would queue the same seed several times)."""
        updates = next_seeds(self.graph, self.registry)
        if updates:
            self.undo.beginMacro("Update seeds after run")
            for nid, name, value in updates:
                self.undo.push(cmd.SetValueCommand(self.graph, nid, name, value, merge=False))
            self.undo.endMacro()

    def _on_queue_changed(self, n: int) -> None:
        self.queue_label.setText(f"{n} queued" if n else "")

    def _on_busy_changed(self, busy: bool) -> None:
        self.progress.setVisible(busy)

    def _on_run_event(self, ev: Any, preview: QImage | None) -> None:
        sc = self.scene
        if isinstance(ev, RunStarted):
            sc.clear_states()
            self._run_problems = []
            self._show_problems()
            for nid in ev.nodes:
                sc.set_state(nid, "queued")
            self._run_graph = self.runner.current_graph or self.graph.copy()  # what this run really used
            self.status_label.setText("Running…")
            self.progress.setRange(0, max(1, len(ev.nodes)))
            self.progress.setValue(0)
            self._done = 0
        elif isinstance(ev, NodeStarted):
            sc.set_state(ev.node_id, "running")
            self.status_label.setText(f"Running {ev.node_type}…")
        elif isinstance(ev, NodeProgress):
            sc.set_progress(ev.node_id, ev.step, ev.total, preview)
        elif isinstance(ev, NodeFinished):
            sc.set_state(ev.node_id, ev.status)
            if ev.status != "skipped":
                self._done = getattr(self, "_done", 0) + 1
                self.progress.setValue(self._done)
            self._show_node_ui(ev.node_id, ev.ui or {}, ev.status)
        elif isinstance(ev, NodeError):
            sc.set_state(ev.node_id, "error")
            first_line = ev.message.strip().splitlines()[0] if ev.message.strip() else "error"
            self._add_run_problem(Problem(ev.node_id, ev.input, first_line, source="run"))
        elif isinstance(ev, RunFinished):
            self.status_label.setText(f"Run {ev.status} in {ev.seconds:.2f} s")

    def _show_node_ui(self, nid: str, ui: Mapping[str, Any], status: str) -> None:
        images = ui.get("images") or []
        if isinstance(images, list) and images:
            last = images[-1]
            path = last if isinstance(last, str) else (last.get("path") if isinstance(last, dict) else None)
            if path:
                img = QImage(str(path))
                if not img.isNull():
                    self.scene.set_preview(nid, img)
            if status == "executed":
                for im in images:
                    p = im if isinstance(im, str) else (im.get("path") if isinstance(im, dict) else None)
                    if p:
                        self.gallery.add(str(p), nid, self._run_graph or self.graph)
        text = ui.get("text")
        if isinstance(text, str):
            self.scene.set_node_text(nid, text[:2000])

    def _on_run_invalid(self, issues: list) -> None:
        shown = {(p.node_id, p.input, p.message) for p in self._validation}
        for i in issues:
            if (i.node_id, i.input, i.message) not in shown:
                self._run_problems.append(Problem(i.node_id, i.input, i.message, i.fix, "run"))
        self._show_problems()
        self.status_label.setText(f"Cannot run: {len(issues)} problem(s)")

    def _on_run_finished(self, report: Any) -> None:
        self.last_report = report


class _Marker(QUndoCommand):
    """A no-op entry marking recovered work as unsaved."""

    def __init__(self) -> None:
        super().__init__("Recovered work")
        self.setObsolete(False)

    def redo(self) -> None:
        pass

    def undo(self) -> None:
        pass
