"""Editing subgraph definitions on the canvas: which graph is shown, and how edits
made inside a definition reach the document.

The document (``scene.root``) stores each definition as a *value*
(:class:`nodegraph.subgraph.SubgraphDef`, never mutated: a run or a validation
snapshot may hold it).  To edit one, the editor keeps a **working graph** per
definition -- a private copy that the canvas shows and the undo commands change
like any graph.  Every change of a working graph is committed at once as a new
definition object in the root (so every instance, the validator, the next run
and Save see it), built from the working graph and the definition's interface.
The working graph lives as long as the document: an undo step recorded inside
a subgraph still applies after the user went back up.

Versioning follows the engine's rule (editing makes a new version, pinned
instances keep the old one): the first commit after opening a definition moves
the version it had into ``history``; later commits of the same visit update it.

Inner nodes' run events carry path ids (``outer/inner``); :meth:`SubgraphEditor.local`
maps them to the node shown at the current level (the instance that contains them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from PySide6.QtCore import QObject, Signal

from nodegraph import Graph, GraphChange, NodeSpec, Registry
from nodegraph.subgraph import (
    SEP,
    SubgraphDef,
    SubgraphInput,
    SubgraphOutput,
    inner_node,
    is_instance,
    lookup,
    parse_type,
)


class EditError(ValueError):
    """An editor action that cannot be done here (message is for the user)."""


@dataclass
class Session:
    """One definition being edited: its working graph and its (unpruned) interface."""

    def_id: str
    working: Graph
    base: SubgraphDef  # interface as last set; targets may name nodes an inner edit removed (undo brings them back)
    committed: SubgraphDef  # the object last stored in the root
    bumped: bool = False  # a new version was made during the current visit
    unsubscribe: Any = None


@dataclass
class _RunMap:
    """Which inner nodes of a run each shown instance still waits for."""

    pending: dict[str, set[str]] = field(default_factory=dict)


class SpecSource:
    """``registry.get`` that also knows subgraph instances (of the document or the library).
    Passed where engine helpers expect a registry for spec look-ups (``extract``)."""

    def __init__(self, editor: SubgraphEditor) -> None:
        self.editor = editor

    def get(self, type_id: str) -> NodeSpec | None:
        return self.editor.spec(type_id)


class SubgraphEditor(QObject):
    """Navigation (the path of opened instances) and the working graphs of one canvas."""

    pathChanged = Signal()  # another level is shown (or the shown level was redrawn)
    shownDefinitionChanged = Signal()  # the definition whose inside is shown was committed

    def __init__(self, scene: Any, registry: Registry) -> None:
        super().__init__(scene)
        self.scene = scene
        self.registry = registry
        self.sessions: dict[str, Session] = {}
        self.path: list[tuple[str, str]] = []  # (instance node id in the parent, definition id), root first
        self.run = _RunMap()
        # What a run showed on each level (state, preview, text by node), kept while another
        # level is shown: going into a subgraph and back must not wipe the last run's previews.
        self.looks: dict[str, dict[str, tuple[Any, Any, Any]]] = {}
        self._shown = ""  # prefix of the level on the canvas
        self._root_unsub: Any = None
        scene.spec_resolver = self.spec
        scene.interface_fed = self.interface_fed
        self.reset()

    @property
    def root(self) -> Graph:
        return self.scene.root

    # -- specs -------------------------------------------------------------------------------
    def spec(self, type_id: str) -> NodeSpec | None:
        """An installed node's spec, or an instance's interface (pinned version honoured)."""
        spec = self.registry.get(type_id)
        if spec is None and is_instance(type_id):
            defn = lookup(type_id, self.root, self.registry)
            spec = defn.node_spec(type_id) if defn is not None else None
        return spec

    def interface_fed(self, node_id: str, name: str) -> bool:
        """Whether an input of the shown subgraph's inside is fed by one of its inputs (drawn
        as linked: its value comes from the subgraph node, editing it here would do nothing)."""
        if not self.path:
            return False
        s = self.sessions.get(self.path[-1][1])
        return s is not None and any((node_id, name) in i.targets for i in s.base.inputs)

    def local_specs(self) -> list[NodeSpec]:
        """The document's own definitions, as the node search lists them (not those open on the
        way here: a definition placed inside itself could never be expanded)."""
        open_ids = {d for _, d in self.path}
        return [d.node_spec() for d in self.root.subgraphs.values() if d.id not in open_ids]

    def definition(self, def_id: str) -> SubgraphDef | None:
        return self.root.subgraphs.get(def_id)

    def shown_definition(self) -> SubgraphDef | None:
        """The definition whose inside the canvas shows (None at the top level)."""
        return self.root.subgraphs.get(self.path[-1][1]) if self.path else None

    # -- document lifecycle --------------------------------------------------------------------
    def reset(self) -> None:
        """A different document is shown: forget every working graph and go to the top."""
        for s in self.sessions.values():
            s.unsubscribe()
        self.sessions.clear()
        self.path = []
        self.run = _RunMap()
        self.looks.clear()
        self._shown = ""
        if self._root_unsub is not None:
            self._root_unsub()
        self._root_unsub = self.root.subscribe(self._on_root_change)
        self.pathChanged.emit()

    def _on_root_change(self, ch: GraphChange) -> None:
        if ch.kind != "subgraph_changed":
            return
        if ch.new is None and any(d == ch.key for _, d in self.path):  # e.g. "Convert" undone from inside
            depth = next(i for i, (_, d) in enumerate(self.path) if d == ch.key)
            self.go_to(depth)
            return
        old, new = ch.old, ch.new
        if old is not None and new is not None and (old.inputs, old.outputs, old.name) != (
                new.inputs, new.outputs, new.name):
            self._reshow_if_used(ch.key)
        if self.path and ch.key == self.path[-1][1]:
            self.shownDefinitionChanged.emit()
        if self.scene.graph is not self.root:
            self.scene.graphChanged.emit()  # validation and autosave follow the document, not the view

    def _reshow_if_used(self, def_id: str) -> None:
        """Instance nodes draw their ports from the interface: redraw the level if it shows one."""
        for n in self.scene.graph.nodes.values():
            parsed = parse_type(n.type)
            if parsed is not None and parsed[0] == def_id:
                selected = self.scene.selected_node_ids()
                self._stash_looks()
                self.scene.set_graph(self.scene.graph, root=self.root)
                self._restore_looks()
                self.scene.select_nodes(selected)
                self.pathChanged.emit()  # items were rebuilt: marks and problem markers again
                return

    # -- sessions ------------------------------------------------------------------------------
    def session(self, def_id: str) -> Session:
        """The working graph of ``def_id`` (made on first use, from the stored definition)."""
        current = self.root.subgraphs.get(def_id)
        if current is None:
            raise EditError(f"subgraph {def_id!r} is not defined in this workflow")
        s = self.sessions.get(def_id)
        if s is not None and s.committed is current:
            return s
        if s is not None:  # replaced by something else (a file reload): its old edits no longer apply
            s.unsubscribe()
        working = current.graph.copy()
        s = Session(def_id, working, current, current)
        s.unsubscribe = working.subscribe(lambda ch, s=s: self._on_working_change(s, ch))
        self.sessions[def_id] = s
        return s

    def _on_working_change(self, s: Session, ch: GraphChange) -> None:
        if ch.kind != "subgraph_changed":
            self.commit(s)

    def commit(self, s: Session) -> None:
        """Store the working graph (and interface) as the definition in the root."""
        current = self.root.subgraphs.get(s.def_id)
        if current is None:
            return  # the definition was removed (its creation undone); nothing to update
        defn = _pruned(replace(s.base, graph=s.working.copy(), version=current.version, history=current.history))
        if not s.bumped:
            history = {**current.history, current.version: replace(current, history={})}
            defn = replace(defn, version=max(current.version, *history) + 1, history=history)
            s.bumped = True
        s.committed = defn
        self.root.set_subgraph(defn)

    def set_interface(self, def_id: str, inputs: tuple[SubgraphInput, ...], outputs: tuple[SubgraphOutput, ...],
                      name: str | None = None) -> None:
        """Replace the interface of a definition (undoable through gui.subgraph_commands)."""
        s = self.session(def_id)
        s.base = replace(s.base, inputs=inputs, outputs=outputs, name=s.base.name if name is None else name)
        self.commit(s)

    # -- navigation ----------------------------------------------------------------------------
    def open(self, node_id: str) -> None:
        """Show the inside of instance ``node_id`` of the shown graph."""
        node = self.scene.graph.nodes.get(node_id)
        parsed = parse_type(node.type) if node is not None else None
        if node is None or parsed is None:
            raise EditError("select a subgraph node to open")
        def_id, version = parsed
        defn = self.root.subgraphs.get(def_id)
        if defn is None:
            raise EditError(f"subgraph {def_id!r} is a library component: copy it into the workflow to edit it")
        if version is not None:  # even the latest: an edit makes a newer one, which this node would not show
            raise EditError(f"this node pins version {version} of {defn.name or def_id!r}; change it to follow the "
                            f"latest version (v{defn.version}) to edit the definition")
        if any(d == def_id for _, d in self.path):
            raise EditError(f"{defn.name or def_id!r} is already open (a subgraph that contains itself)")
        s = self.session(def_id)
        s.bumped = False
        self.path.append((node_id, def_id))
        self._show()

    def go_to(self, depth: int) -> None:
        """Show level ``depth`` (0: the workflow itself)."""
        depth = max(0, min(depth, len(self.path)))
        if depth == len(self.path) and self.scene.graph is self._graph_at(depth):
            return
        del self.path[depth:]
        self._show()

    def go_up(self) -> bool:
        if not self.path:
            return False
        self.go_to(len(self.path) - 1)
        return True

    def _graph_at(self, depth: int) -> Graph:
        return self.root if depth == 0 else self.session(self.path[depth - 1][1]).working

    def _show(self) -> None:
        self.scene.close_editor(commit=True)
        self._stash_looks()
        self.scene.set_graph(self._graph_at(len(self.path)), root=self.root)
        self._shown = self.prefix()
        self._restore_looks()
        self.pathChanged.emit()

    def _stash_looks(self) -> None:
        sc = self.scene
        looks = {nid: (sc.states.get(nid), item.preview, sc.node_text.get(nid))
                 for nid, item in sc.node_items.items()
                 if nid in sc.states or item.preview is not None or nid in sc.node_text}
        self.looks[self._shown] = looks

    def _restore_looks(self) -> None:
        sc = self.scene
        for nid, (state, preview, text) in self.looks.pop(self._shown, {}).items():
            if nid not in sc.node_items:
                continue
            if state is not None:
                sc.set_state(nid, state)
            if preview is not None:
                sc.set_preview(nid, preview)
            if text:
                sc.set_node_text(nid, text)

    def labels(self) -> list[str]:
        """Breadcrumb text: the workflow, then each opened subgraph's name."""
        out = ["Workflow"]
        for _, def_id in self.path:
            d = self.root.subgraphs.get(def_id)
            out.append(d.name if d is not None and d.name else def_id)
        return out

    # -- run events ----------------------------------------------------------------------------
    def prefix(self) -> str:
        return "".join(nid + SEP for nid, _ in self.path)

    def local(self, path_id: str | None) -> str | None:
        """The shown node an engine node id (a path) belongs to, or None if it is not on this level."""
        if not path_id:
            return None
        p = self.prefix()
        if not path_id.startswith(p):
            return None
        return path_id[len(p):].split(SEP, 1)[0]

    def node_label(self, path_id: str) -> str:
        """What the user calls a node named by path: titles (or type names) of the subgraph
        nodes on the way and of the node, "Hires pass / KSampler"."""
        nodes, node, _ = inner_node(self.root, path_id, self.registry)
        if node is None:
            return path_id
        names = []
        for n in (*nodes, node):
            spec = self.spec(n.type)
            names.append(n.title or (spec.display_name if spec is not None else n.type))
        return " / ".join(names)

    def run_started(self, node_ids: list[str]) -> None:
        self.run = _RunMap()
        self.looks.clear()  # other levels' states belong to the previous run
        for nid in node_ids:
            lid = self.local(nid)
            if lid is not None:
                self.run.pending.setdefault(lid, set()).add(nid)

    def run_node_finished(self, path_id: str) -> bool:
        """Forget a finished node; True when its shown node has nothing left to run."""
        lid = self.local(path_id)
        left = self.run.pending.get(lid or "")
        if left is None:
            return True
        left.discard(path_id)
        return not left

    def reveal(self, path_id: str) -> str | None:
        """Navigate to the level holding ``path_id`` (a problem's node); returns its id there."""
        parts = path_id.split(SEP)
        if len(parts) == 1:
            if self.path:
                self.go_to(0)
            return path_id
        self.go_to(0)
        try:
            for nid in parts[:-1]:
                self.open(nid)
        except EditError:
            return self.local(path_id)
        return parts[-1]


def _pruned(defn: SubgraphDef) -> SubgraphDef:
    """The interface restricted to what the inner graph still has: targets on removed nodes
    or on inputs now fed by an inner link, outputs from removed nodes (kept unconnected)."""
    g = defn.graph
    inputs = tuple(replace(i, targets=tuple((n, p) for n, p in i.targets
                                            if n in g.nodes and g.link_into(n, p) is None))
                   for i in defn.inputs)
    outputs = tuple(o if o.source is None or o.source[0] in g.nodes else replace(o, source=None)
                    for o in defn.outputs)
    return replace(defn, inputs=inputs, outputs=outputs)
