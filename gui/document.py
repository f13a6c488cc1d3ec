"""The open workflow as a *file*: open, save, recent files, autosave, crash recovery.

Kept apart from the window so that what happens to the user's work (when it is
written, when it may be thrown away, what "modified" means) reads in one place.
Questions to the user go through the window's ``ask_*`` methods, which tests and
scripted front-ends replace to answer without a modal loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from nodegraph import Graph, WorkflowFileError, save_workflow
from nodegraph.open import open_any

from .autosave import Autosaver
from .canvas import GraphScene

if TYPE_CHECKING:
    from .main_window import MainWindow

MAX_RECENT = 10


class Document(QObject):
    """Owns the path, the clean/dirty state (the undo stack's) and the recovery file of
    one workflow tab; ``win`` asks the questions and shows the messages."""

    replaced = Signal()  # a different graph is shown (new, opened, recovered)
    titleChanged = Signal()  # path or modified state changed
    recentChanged = Signal()

    def __init__(self, win: MainWindow, scene: GraphScene, undo: QUndoStack, qsettings: QSettings,
                 autosaver: Autosaver, parent: QObject | None = None) -> None:
        super().__init__(parent or win)
        self.win = win
        self.scene = scene
        self.undo = undo
        self.qsettings = qsettings
        self.autosaver = autosaver
        self.path: Path | None = None
        undo.cleanChanged.connect(self._on_clean_changed)

    @property
    def graph(self) -> Graph:
        return self.scene.root  # the whole document, also while a subgraph's inside is shown

    @property
    def modified(self) -> bool:
        return not self.undo.isClean()

    def display_name(self) -> str:
        return self.path.name if self.path else "Untitled"

    def untouched(self) -> bool:
        """A fresh empty document nobody has edited: opening a file may reuse its tab."""
        return self.path is None and len(self.graph) == 0 and self.undo.count() == 0

    def set_graph(self, graph: Graph, path: str | Path | None, *, modified: bool = False) -> None:
        """Show ``graph`` as the document saved at ``path`` (None: untitled)."""
        self.scene.set_graph(graph)
        self.undo.clear()
        self.path = Path(path) if path else None
        self.autosaver.track(graph, str(self.path) if self.path else None)
        if modified:
            # Recovered work: unsaved by definition.  A no-op command makes the stack dirty
            # without inventing an edit the user could undo.
            self.undo.push(_Marker())
        self.titleChanged.emit()
        self.replaced.emit()

    def _on_clean_changed(self, clean: bool) -> None:
        self.autosaver.mark_dirty(not clean)
        self.titleChanged.emit()

    def on_graph_edited(self) -> None:
        self.autosaver.mark_dirty(self.modified)

    # -- asking before losing work -------------------------------------------------------------
    def maybe_discard(self) -> bool:
        """True if it is fine to replace the current document."""
        if not self.modified:
            return True
        answer = self.win.ask_save_changes()
        if answer == "save":
            return self.save()
        return answer == "discard"

    def last_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    # -- commands ----------------------------------------------------------------------------
    def new(self) -> None:
        if self.maybe_discard():
            self.autosaver.discard()
            self.set_graph(Graph(), None)

    def open_path(self, path: str | Path, *, ask: bool = True) -> bool:
        """Open a workflow: ours (.json or a PNG we wrote) or ComfyUI's (UI/API JSON or PNG).

        Imported files and PNGs are not where we save to, so they open as untitled."""
        if ask and not self.maybe_discard():
            return False
        p = Path(path)
        try:
            graph, notes = open_any(p)
        except (WorkflowFileError, ValueError, OSError) as exc:
            self.win.show_error("Cannot open", str(exc))
            return False
        native = not notes and p.suffix.lower() == ".json"
        self.set_graph(graph, p if native else None)
        self.add_recent(p)
        self.autosaver.discard()
        if len(notes) > 1:  # placeholders, dropped inputs, approximations: worth a dialog
            self.win.show_info("Imported", "\n".join(notes))
        elif notes:  # only the summary line: nothing went wrong, no dialog to dismiss
            self.win.last_info = notes[0]
            self.win.statusBar().showMessage(f"Opened {p.name}: {notes[0]}", 6000)
        else:
            self.win.statusBar().showMessage(f"Opened {p}", 4000)
        return True

    def save(self) -> bool:
        if self.path is None:
            return self.save_as()
        return self.write(self.path)

    def save_as(self) -> bool:
        path = self.win.ask_save_path()
        if not path:
            return False
        p = Path(path)
        if p.suffix.lower() != ".json":
            p = p.with_suffix(".json")
        return self.write(p)

    def write(self, path: Path) -> bool:
        try:
            save_workflow(self.graph, path)
        except OSError as exc:
            self.win.show_error("Cannot save", f"{path}: {exc}")
            return False
        self.path = path
        self.undo.setClean()
        self.autosaver.track(self.graph, str(path))
        self.autosaver.discard()
        self.add_recent(path)
        self.titleChanged.emit()
        self.win.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    # -- recent files ------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.qsettings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: Path) -> None:
        p = str(Path(path).resolve())
        items = [p] + [r for r in self.recent_files() if r != p]
        self.qsettings.setValue("recent", items[:MAX_RECENT])
        self.recentChanged.emit()




class _Marker(QUndoCommand):
    """A no-op entry marking recovered work as unsaved."""

    def __init__(self) -> None:
        super().__init__("Recovered work")
        self.setObsolete(False)

    def redo(self) -> None:
        pass

    def undo(self) -> None:
        pass
