"""One open workflow — a tab of the editor window.

Everything that belongs to *one* workflow lives here, so several can be open at
once without stepping on each other: the scene and its view (with minimap and
breadcrumb), the undo stack, the document (path, dirty state, autosave and crash
recovery file), the editing verbs, the subgraph verbs, and validation and run
feedback.  The window keeps only what is shared: the menus, the docks (which show
the tab on screen), the status bar, and the one runner whose worker owns the
executor; runs from every tab queue there, each tagged with its tab, so a run's
events land on the canvas of the tab that queued it whichever tab is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QWidget

from nodegraph import Graph

from .autosave import Autosaver
from .canvas import GraphScene, GraphView
from .document import Document
from .edit_actions import EditActions
from .panels.minimap import Minimap
from .run_presenter import RunPresenter
from .subgraph_actions import SubgraphActions

if TYPE_CHECKING:
    from .main_window import MainWindow


class Workspace(QObject):
    """The per-workflow state of one tab.  ``page`` is the widget the tab shows."""

    titleChanged = Signal()  # the tab's label (file name, "*" when unsaved) may have changed

    def __init__(self, win: MainWindow, *, recovery_path: Path | None, autosave_ms: int, validate_ms: int) -> None:
        super().__init__(win)
        self.win = win
        self.undo = QUndoStack(self)
        self.scene = GraphScene(win.registry, self.undo, win.settings)
        self.scene.snap_grid = win.snap_grid()
        self.view = GraphView(self.scene)
        self.minimap = Minimap(self.view)
        self.autosaver = Autosaver(recovery_path, autosave_ms, self)
        self.document = Document(win, self.scene, self.undo, win.qsettings, self.autosaver, parent=self)
        self.edits = EditActions(win, self.scene, self.view, self.undo, owner=self)
        self.subgraph_actions = SubgraphActions(win, self)  # breadcrumb, open/convert/unpack
        self.presenter = RunPresenter(win, self, validate_ms)
        self.page: QWidget = self.subgraph_actions.container
        self.closed = False
        self._frame_when_shown = False

        self.scene.graphChanged.connect(self._on_graph_changed)
        self.document.titleChanged.connect(self.titleChanged)
        self.document.replaced.connect(self._on_replaced)
        self.view.filesDropped.connect(lambda paths: win.images.drop(paths, self.view._last_scene_pos))
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self.edits.context_menu)
        self.view.statusMessage.connect(lambda m: win.statusBar().showMessage(m, 4000))

    # -- state ---------------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self.scene.root

    def tab_title(self) -> str:
        """File name, with "*" while there are unsaved changes."""
        return self.document.display_name() + ("*" if self.document.modified else "")

    def untouched(self) -> bool:
        return self.document.untouched()

    # -- reactions -----------------------------------------------------------------------------
    def _on_graph_changed(self) -> None:
        self.presenter.schedule_validation()
        self.document.on_graph_edited()

    def _on_replaced(self) -> None:
        self.presenter.reset()
        self.view.frame_all()
        QTimer.singleShot(0, self.view.frame_all)  # again once the layout has given the view its size
        self.minimap.place()
        self._frame_when_shown = not self.win.is_current(self)  # a hidden view's size is not final

    def shown(self) -> None:
        """The tab came on screen: the shared panels and the status label show this workflow, and every node is
        drawn afresh: a node updated while its view was hidden (a run of this tab went on
        in the background) would otherwise show its old cached picture."""
        self.scene.drop_node_caches()
        self.presenter.show_problems()
        self.win.status_label.setText(self.presenter.last_status)  # not the previous tab's run state
        self.minimap.place()
        if self._frame_when_shown:
            self._frame_when_shown = False
            self.view.frame_all()

    # -- closing -------------------------------------------------------------------------------
    def close(self, *, clean: bool = True) -> None:
        """The tab goes away: its runs are dropped, its checks stopped; a clean close also
        removes its recovery file (the user saved or discarded the work)."""
        if self.closed:
            return
        self.closed = True
        self.win.runner.cancel_owner(self)
        self.presenter.shutdown()
        self.autosaver.timer.stop()
        if clean:
            self.autosaver.close()
