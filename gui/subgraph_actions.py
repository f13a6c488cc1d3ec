"""Subgraph verbs of the editor window: convert the selection, open (double-click),
go up (Esc, breadcrumb), edit the interface, promote a widget, unpack.

The window owns one :class:`SubgraphActions`; it installs the breadcrumb bar over
the canvas and adds its entries to the Node menu and the context menu.  Questions
to the user go through ``ask_*`` methods that tests replace.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, QPointF, Qt, QTimer
from PySide6.QtGui import QKeySequence, QMouseEvent, QTransform
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QVBoxLayout,
    QWidget,
)

from nodegraph import WorkflowFileError
from nodegraph.subgraph import _NAME_RE, SubgraphDef, extract, is_instance, parse_type
from nodegraph.workflow import subgraph_to_dict, subgraphs_from_dict

from .canvas.breadcrumb import BreadcrumbBar
from .canvas.subgraph_marks import SubgraphMarks
from .subgraph_commands import (
    AddDefinitionCommand,
    ConvertToSubgraphCommand,
    EditInterfaceCommand,
    UnpackCommand,
    promoted_input,
)
from .subgraph_editor import EditError, SpecSource, SubgraphEditor

if TYPE_CHECKING:
    from .main_window import MainWindow


@dataclass
class InterfaceEdit:
    """What the interface dialog returns: new names (None = remove) and the display name."""

    inputs: dict[str, str | None] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)
    name: str | None = None


class SubgraphActions(QObject):
    """Subgraph verbs of one workflow tab (``tab``: its scene, view, undo stack, document,
    edits and presenter); ``win`` answers dialogs and owns the menus."""

    def __init__(self, win: MainWindow, tab: Any) -> None:
        super().__init__(tab)
        self.win = win
        self.tab = tab
        self.scene, self.view, self.undo = tab.scene, tab.view, tab.undo
        self.editor = SubgraphEditor(tab.scene, win.registry)
        self._views: list[tuple[QTransform, QPointF]] = []  # the view of each level above, to restore on the way up
        self._install_breadcrumb()
        self.marks = SubgraphMarks(self.scene, self.editor)
        self.editor.shownDefinitionChanged.connect(self.marks.label_boundary)
        self.view.search.extra_specs = self.editor.local_specs
        self.view.installEventFilter(self)
        self.view.viewport().installEventFilter(self)
        tab.document.replaced.connect(self._on_replaced)
        self.editor.pathChanged.connect(self._on_path)

    def _install_breadcrumb(self) -> None:
        """The tab's page: the breadcrumb bar over the canvas (``self.container``)."""
        self.breadcrumb = BreadcrumbBar()
        self.breadcrumb.levelClicked.connect(self.go_to)
        self.container = QWidget()
        lay = QVBoxLayout(self.container)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.breadcrumb)
        lay.addWidget(self.view, 1)

    @staticmethod
    def build_menu(win: MainWindow, menu: Any) -> None:
        """Entries of the Node menu (with shortcuts); each acts in the tab shown when chosen."""
        menu.addSeparator()
        act = win._action

        def on_current(verb: str) -> Any:
            return lambda: getattr(win.subgraph_actions, verb)()

        act("Convert to Subgraph", on_current("convert_selection"), QKeySequence("Ctrl+Shift+G"), menu)
        act("Open Subgraph", on_current("open_selected"), QKeySequence("Ctrl+Shift+E"), menu)
        act("Go Up One Level", on_current("go_up"), QKeySequence("Alt+Up"), menu)
        act("Edit Subgraph Interface…", on_current("edit_interface_selected"), None, menu)
        act("Promote Inner Widget…", on_current("promote_selected"), None, menu)
        act("Unpack Subgraph", on_current("unpack_selected"), QKeySequence("Ctrl+Shift+U"), menu)

    def context_items(self, menu: QMenu, node_id: str) -> None:
        """Context-menu entries for the node under the mouse (already selected)."""
        menu.addSeparator()
        menu.addAction("Convert to Subgraph").triggered.connect(lambda _=False: self.convert_selection())
        node = self.scene.graph.nodes.get(node_id)
        if node is not None and is_instance(node.type):
            for text, fn in (("Open Subgraph", self.open_selected), ("Edit Interface…", self.edit_interface_selected),
                             ("Promote Inner Widget…", self.promote_selected), ("Unpack", self.unpack_selected)):
                menu.addAction(text).triggered.connect(lambda _=False, f=fn: f())

    # -- helpers ---------------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.win.show_error("Subgraph", message)

    def _selected_instance(self) -> str | None:
        ids = [n for n in self.scene.selected_node_ids() if is_instance(self.scene.graph.node(n).type)]
        if len(ids) != 1:
            self._fail("select one subgraph node")
            return None
        return ids[0]

    def _new_def_id(self) -> str:
        taken = set(self.editor.root.subgraphs) | set(self.win.registry.subgraphs)
        k = 1
        while f"subgraph_{k}" in taken:
            k += 1
        return f"subgraph_{k}"

    # -- verbs -----------------------------------------------------------------------------------
    def convert_selection(self, name: str | None = None) -> str | None:
        """Selected nodes -> a subgraph node; returns the new instance's id."""
        ids = self.scene.selected_node_ids()
        if not ids:
            self._fail("select the nodes to put into a subgraph")
            return None
        def_id = self._new_def_id()
        name = name if name is not None else self.ask_subgraph_name(f"Subgraph {def_id.rsplit('_', 1)[1]}")
        if name is None:
            return None
        self.scene.close_editor(commit=True)
        try:  # a dry run on a copy: an exception inside QUndoStack.push would leave a broken entry
            extract(self.scene.graph.copy(), SpecSource(self.editor), ids, def_id,  # type: ignore[arg-type]
                    promote=list(self._changing_seeds(ids)), name=name)
        except ValueError as exc:  # SubgraphError / GraphError: nothing was changed
            self._fail(str(exc))
            return None
        command = ConvertToSubgraphCommand(self.editor, self.scene.graph, ids, def_id, name,
                                           promote=self._changing_seeds(ids))
        self.undo.push(command)
        assert command.instance is not None
        self.scene.select_nodes([command.instance.id])
        return command.instance.id

    def _changing_seeds(self, ids: list[str]) -> dict[tuple[str, str], str]:
        """Seeds set to change after each run ("randomize", "increment"…) among the selected
        nodes: promoted by Convert, since seed control acts on the nodes of the workflow's top
        level -- inside a subgraph the seed would silently stay the same."""
        g, out = self.scene.graph, {}
        for nid in ids:
            node = g.node(nid)
            ctl = node.ui.get("seed_control")
            spec = self.editor.spec(node.type)
            for name, mode in (ctl.items() if isinstance(ctl, dict) and spec is not None else ()):
                inp = spec.input(name)
                if mode != "fixed" and inp is not None and inp.has_widget and g.link_into(nid, name) is None:
                    out[(nid, name)] = str(mode)
        return out

    def open_selected(self) -> None:
        nid = self._selected_instance()
        if nid is not None:
            self.open(nid)

    def open(self, node_id: str) -> bool:
        """Show the inside of an instance (a library component is first copied into the workflow)."""
        node = self.scene.graph.nodes.get(node_id)
        parsed = parse_type(node.type) if node is not None else None
        if parsed is not None and parsed[0] not in self.editor.root.subgraphs \
                and parsed[0] in self.win.registry.subgraphs:
            self.undo.push(AddDefinitionCommand(self.editor.root, self.win.registry.subgraphs[parsed[0]]))
        view = (self.view.transform(), self.view.mapToScene(self.view.viewport().rect().center()))
        try:
            self.editor.open(node_id)
        except EditError as exc:
            self._fail(str(exc))
            return False
        self._views.append(view)
        QTimer.singleShot(0, self.view.frame_all)
        self.view.frame_all()
        return True

    def go_up(self) -> bool:
        return self.go_to(len(self.editor.path) - 1) if self.editor.path else False

    def go_to(self, depth: int) -> bool:
        if depth < 0 or depth >= len(self.editor.path):
            return False
        self.editor.go_to(depth)
        return True

    def unpack_selected(self) -> list[str]:
        nid = self._selected_instance()
        if nid is None:
            return []
        try:
            command = UnpackCommand(self.editor, self.scene.graph, nid)
        except ValueError as exc:
            self._fail(str(exc))
            return []
        self.undo.push(command)
        ids = [n.id for n in command.new_nodes]
        self.scene.select_nodes(ids)
        return ids

    def _editable_definition(self) -> SubgraphDef | None:
        nid = self._selected_instance()
        if nid is None:
            return None
        parsed = parse_type(self.scene.graph.node(nid).type)
        assert parsed is not None
        if parsed[0] not in self.editor.root.subgraphs and parsed[0] in self.win.registry.subgraphs:
            self.undo.push(AddDefinitionCommand(self.editor.root, self.win.registry.subgraphs[parsed[0]]))
        defn = self.editor.definition(parsed[0])
        if defn is None:
            self._fail(f"subgraph {parsed[0]!r} is not defined")
        return defn

    def edit_interface_selected(self) -> bool:
        defn = self._editable_definition()
        if defn is None:
            return False
        change = self.ask_interface(defn)
        if change is None:
            return False
        return self.apply_interface(defn, change)

    def apply_interface(self, defn: SubgraphDef, change: InterfaceEdit) -> bool:
        """Rename/remove ports as ``change`` says (one undo step); False if a name is invalid."""
        base = self.editor.session(defn.id).base
        inputs = tuple(replace(i, name=change.inputs.get(i.name, i.name)) for i in base.inputs
                       if change.inputs.get(i.name, i.name))
        outputs = tuple(replace(o, name=change.outputs.get(o.name, o.name)) for o in base.outputs
                        if change.outputs.get(o.name, o.name))
        for what, names in (("input", [i.name for i in inputs]), ("output", [o.name for o in outputs])):
            bad = [n for n in names if not _NAME_RE.match(n)]
            dup = sorted({n for n in names if names.count(n) > 1})
            if bad or dup:
                self._fail(f"{what} name(s) {bad or dup} " + ("are not identifiers (letters, digits, _)" if bad
                                                             else "are used twice"))
                return False
        self.undo.push(EditInterfaceCommand(self.editor, defn.id, inputs, outputs, renamed_inputs=change.inputs,
                                            renamed_outputs=change.outputs, name=change.name))
        return True

    def promote_selected(self) -> bool:
        """Make an inner widget an input of the subgraph node (its current value becomes the default)."""
        defn = self._editable_definition()
        if defn is None:
            return False
        choices = self._promotable(defn)
        if not choices:
            self._fail("every inner widget is already promoted or linked")
            return False
        picked = self.ask_promote(list(choices))
        if picked is None or picked not in choices:
            return False
        node_id, spec_input = choices[picked]
        s = self.editor.session(defn.id)
        value = s.working.node(node_id).values.get(spec_input.name, spec_input.default)
        new = promoted_input(s.base, spec_input, node_id, value)
        self.undo.push(EditInterfaceCommand(self.editor, defn.id, (*s.base.inputs, new), s.base.outputs,
                                            text=f"Promote {picked}"))
        return True

    def _promotable(self, defn: SubgraphDef) -> dict[str, tuple[str, Any]]:
        """"node label.input" -> (inner node id, spec input) for widgets not fed yet."""
        g = self.editor.session(defn.id).working
        fed = {t for i in self.editor.session(defn.id).base.inputs for t in i.targets}
        out: dict[str, tuple[str, Any]] = {}
        for n in g.nodes.values():
            spec = self.editor.spec(n.type)
            for inp in spec.inputs if spec is not None else ():
                if inp.has_widget and (n.id, inp.name) not in fed and g.link_into(n.id, inp.name) is None:
                    label = n.title or (spec.display_name if spec else n.type)
                    out[f"{label} [{n.id}].{inp.name}"] = (n.id, inp)
        return out

    # -- clipboard -------------------------------------------------------------------------------
    def attach_definitions(self, doc: dict[str, Any]) -> None:
        """Add the definitions a copied fragment's subgraph nodes need (nested ones too), so
        a paste into another workflow or window brings them along."""
        root, table = self.editor.root, {}
        todo = [n["type"] for n in doc.get("nodes", {}).values()]
        while todo:
            parsed = parse_type(todo.pop())
            defn = root.subgraphs.get(parsed[0]) if parsed is not None else None
            if defn is None or defn.id in table:
                continue
            table[defn.id] = subgraph_to_dict(defn)
            for d in (defn, *defn.history.values()):
                todo += [n.type for n in d.graph.nodes.values()]
        if table:
            doc["subgraphs"] = table

    def add_missing_definitions(self, doc: dict[str, Any]) -> None:
        """Before a paste: definitions the fragment carries that this workflow lacks (undoable).
        A definition the workflow already has is kept as it is."""
        try:
            defs = subgraphs_from_dict(doc.get("subgraphs") or {})
        except (WorkflowFileError, ValueError) as exc:  # hand-edited clipboard: paste the nodes, say why
            self.win.statusBar().showMessage(f"Subgraph definitions not pasted: {exc}", 6000)
            return
        for d in defs:
            if d.id not in self.editor.root.subgraphs:
                self.undo.push(AddDefinitionCommand(self.editor.root, d))

    def focus(self, path_id: str) -> None:
        """Show a node named by path (a problem's node): open the subgraphs on the way."""
        local = self.editor.reveal(path_id)
        if local is not None:
            self.tab.edits.focus_node(local)

    # -- events ----------------------------------------------------------------------------------
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        et = event.type()
        if et == QEvent.Type.KeyPress and obj is self.view and event.key() == Qt.Key.Key_Escape \
                and self.editor.path and self.scene.editor is None and getattr(self.view, "_wire", None) is None:
            self.go_up()
            return True
        if et == QEvent.Type.MouseButtonDblClick and obj is self.view.viewport() and isinstance(event, QMouseEvent):
            item = self.view.node_at(event.position().toPoint())
            if item is not None and is_instance(self.scene.graph.node(item.node_id).type):
                self.open(item.node_id)
                return True
        return False

    def _on_replaced(self) -> None:
        self._views = []
        self.editor.reset()

    def _on_path(self) -> None:
        self.breadcrumb.set_path(self.editor.labels())
        depth = len(self.editor.path)
        if depth < len(self._views):  # went up: back to where the user was looking
            transform, center = self._views[depth]
            del self._views[depth:]
            self.view.setTransform(transform)
            self.view.centerOn(center)
        presenter = getattr(self.tab, "presenter", None)  # None while the tab is being built
        if presenter is not None:
            presenter.show_problems()

    # -- dialogs (tests replace these) -------------------------------------------------------------
    def ask_subgraph_name(self, default: str) -> str | None:
        text, ok = QInputDialog.getText(self.win, "Convert to subgraph", "Name:", text=default)
        return (text.strip() or default) if ok else None

    def ask_promote(self, choices: list[str]) -> str | None:
        item, ok = QInputDialog.getItem(self.win, "Promote widget", "Inner widget:", choices, 0, False)
        return item if ok else None

    def ask_interface(self, defn: SubgraphDef) -> InterfaceEdit | None:
        return InterfaceDialog(defn, self.win).result_edit()


class InterfaceDialog(QDialog):
    """Rename or remove a subgraph's inputs and outputs (and its display name)."""

    def __init__(self, defn: SubgraphDef, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Interface of {defn.name or defn.id}")
        grid = QGridLayout()
        self.name = QLineEdit(defn.name or defn.id)
        grid.addWidget(QLabel("Name"), 0, 0)
        grid.addWidget(self.name, 0, 1)
        self.rows: list[tuple[str, str, QLineEdit, QCheckBox]] = []
        r = 1
        for kind, ports in (("input", defn.inputs), ("output", defn.outputs)):
            for p in ports:
                edit, remove = QLineEdit(p.name), QCheckBox("remove")
                grid.addWidget(QLabel(f"{kind} ({p.type})"), r, 0)
                grid.addWidget(edit, r, 1)
                grid.addWidget(remove, r, 2)
                self.rows.append((kind, p.name, edit, remove))
                r += 1
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addWidget(buttons)

    def result_edit(self) -> InterfaceEdit | None:
        """Ask (modal); None if cancelled."""
        return self.edit() if self.exec() == QDialog.DialogCode.Accepted else None

    def edit(self) -> InterfaceEdit:
        """The change the fields describe now."""
        change = InterfaceEdit(name=self.name.text().strip() or None)
        for kind, old, edit, remove in self.rows:
            target = change.inputs if kind == "input" else change.outputs
            target[old] = None if remove.isChecked() else edit.text().strip()
        return change
