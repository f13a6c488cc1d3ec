"""Undoable subgraph edits: convert a selection, unpack an instance, change an
interface (rename/remove/promote), copy a library component into the workflow.

Like :mod:`gui.commands`, each command changes graphs only through their methods
(the canvas follows notifications).  A command works out what to do on its first
``redo`` and keeps the objects it made (definition, instance node, new nodes),
so redo after undo restores *the same* objects: undo steps recorded later, inside
the new subgraph, keep applying to them.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from PySide6.QtGui import QUndoCommand

from nodegraph import Graph, Link, Node
from nodegraph.subgraph import (
    SEP,
    SubgraphDef,
    SubgraphInput,
    SubgraphOutput,
    extract,
    lookup,
    parse_type,
    unique_name,
)

from .subgraph_editor import SpecSource, SubgraphEditor


def _touching(graph: Graph, ids: set[str]) -> list[Link]:
    return [lk for lk in graph.links if lk.src in ids or lk.dst in ids]


def _relink(graph: Graph, links: list[Link]) -> None:
    for lk in links:
        if lk.src in graph.nodes and lk.dst in graph.nodes:
            graph.connect(lk.src, lk.src_output, lk.dst, lk.dst_input, extra=lk.extra)


def _center(nodes: list[Node]) -> list[float]:
    pts = [n.ui["pos"] for n in nodes if isinstance(n.ui.get("pos"), (list, tuple)) and len(n.ui["pos"]) == 2]
    if not pts:
        return [0, 0]
    return [round(sum(float(p[0]) for p in pts) / len(pts)), round(sum(float(p[1]) for p in pts) / len(pts))]


class ConvertToSubgraphCommand(QUndoCommand):
    """Selected nodes of ``graph`` (the shown level) -> a new definition + one instance.
    Uses :func:`nodegraph.subgraph.extract` (same results and cache keys as before)."""

    def __init__(self, editor: SubgraphEditor, graph: Graph, node_ids: list[str], def_id: str, name: str = "",
                 promote: dict[tuple[str, str], str] | None = None) -> None:
        """``promote``: inner (node, input) widgets to promote -> their seed control ("fixed", "randomize"…),
        which moves to the instance node so the seed keeps changing after each run."""
        super().__init__(f"Convert {len(node_ids)} node(s) to subgraph")
        self.editor, self.graph = editor, graph
        self.ids = [n for n in node_ids if n in graph.nodes]
        self.def_id, self.name, self.promote = def_id, name, dict(promote or {})
        self.instance: Node | None = None
        self._nodes: list[Node] = []
        self._links: list[Link] = []
        self._inst_links: list[Link] = []
        self._defn: SubgraphDef | None = None
        self._parent_id = ""  # converting inside a definition: its id and (old, new) interface
        self._parent_iface: tuple[tuple[Any, Any], tuple[Any, Any]] | None = None

    def redo(self) -> None:
        root = self.editor.root
        if self.instance is None:
            self._nodes = [self.graph.node(n) for n in self.ids]
            self._links = _touching(self.graph, set(self.ids))
            pos = _center(self._nodes)
            defn, inst = extract(self.graph, SpecSource(self.editor), self.ids, self.def_id,  # type: ignore[arg-type]
                                 promote=self.promote, name=self.name)
            if self.graph is not root:  # converting inside a subgraph: definitions live in the document
                self.graph.remove_subgraph(self.def_id)
                root.set_subgraph(self._through_parent(defn, inst.id))
            self.graph.set_ui(inst.id, "pos", pos)
            controls = {i.name: self.promote[i.targets[0]] for i in defn.inputs
                        if len(i.targets) == 1 and i.targets[0] in self.promote and i.widget is not None}
            if any(mode != "fixed" for mode in controls.values()):
                self.graph.set_ui(inst.id, "seed_control", controls)
            self.instance = inst
            self._inst_links = _touching(self.graph, {inst.id})
            return
        for nid in self.ids:
            self.graph.remove_node(nid)
        assert self._defn is not None
        root.set_subgraph(self._defn)
        self.graph.insert_node(self.instance)
        _relink(self.graph, self._inst_links)
        if self._parent_iface is not None:
            self.editor.set_interface(self._parent_id, *self._parent_iface[1])

    def _through_parent(self, defn: SubgraphDef, inst_id: str) -> SubgraphDef:
        """Converting inside definition P: P's interface ports that fed (or came from) the
        selected nodes now pass through the new instance, so the new definition gets matching
        ports and P's ports point at the instance."""
        parent = next((s for s in self.editor.sessions.values() if s.working is self.graph), None)
        if parent is None:
            return defn
        chosen = set(self.ids)
        ins, outs = list(defn.inputs), list(defn.outputs)
        names_in, names_out = {i.name for i in ins}, {o.name for o in outs}
        p_inputs = []
        for i in parent.base.inputs:
            inside = tuple(t for t in i.targets if t[0] in chosen)
            if inside:
                name = unique_name(i.name, names_in)
                ins.append(replace(i, name=name, targets=inside))
                i = replace(i, targets=(*(t for t in i.targets if t[0] not in chosen), (inst_id, name)))
            p_inputs.append(i)
        p_outputs = []
        for o in parent.base.outputs:
            if o.source is not None and o.source[0] in chosen:
                same = next((x for x in outs if x.source == o.source), None)
                if same is None:
                    same = SubgraphOutput(unique_name(o.name, names_out), o.type, o.source)
                    outs.append(same)
                o = replace(o, source=(inst_id, same.name))
            p_outputs.append(o)
        self._parent_id = parent.def_id
        self._parent_iface = ((parent.base.inputs, parent.base.outputs), (tuple(p_inputs), tuple(p_outputs)))
        self.editor.set_interface(parent.def_id, *self._parent_iface[1])
        return replace(defn, inputs=tuple(ins), outputs=tuple(outs))

    def undo(self) -> None:
        assert self.instance is not None
        root = self.editor.root
        self._defn = root.subgraphs.get(self.def_id)  # as edited since (kept for redo)
        self.graph.remove_node(self.instance.id)
        if self.def_id in root.subgraphs:
            root.remove_subgraph(self.def_id)
        for n in self._nodes:
            self.graph.insert_node(n)
        _relink(self.graph, self._links)
        if self._parent_iface is not None:
            self.editor.set_interface(self._parent_id, *self._parent_iface[0])


class UnpackCommand(QUndoCommand):
    """An instance -> its definition's inner nodes, wired where the instance was wired,
    with the instance's promoted values and per-instance overrides applied."""

    def __init__(self, editor: SubgraphEditor, graph: Graph, node_id: str) -> None:
        super().__init__("Unpack subgraph")
        self.graph = graph
        self.instance = graph.node(node_id)
        defn = lookup(self.instance.type, editor.root, editor.registry)
        if defn is None:
            raise ValueError(f"node {node_id!r} is not a subgraph instance with a known definition")
        self._inst_links = _touching(graph, {node_id})
        self._ids: dict[str, str] = {}
        self.new_nodes, self._new_links = self._plan(defn)
        self.editor = editor
        self._parent = next((s for s in editor.sessions.values() if s.working is graph), None)
        self._parent_iface = self._through_parent(defn) if self._parent is not None else None

    def _through_parent(self, defn: SubgraphDef) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        """Unpacking inside definition P: P's ports that fed (or came from) the instance now
        reach the unpacked nodes directly.  Returns P's (old, new) interface."""
        assert self._parent is not None
        base, inst, ids = self._parent.base, self.instance.id, self._ids
        inputs = []
        for i in base.inputs:
            targets: list[tuple[str, str]] = []
            for t in i.targets:
                d_in = defn.input(t[1]) if t[0] == inst else None
                if t[0] != inst:
                    targets.append(t)
                elif d_in is not None:
                    targets += [(ids[n], p) for n, p in d_in.targets if n in ids]
            inputs.append(replace(i, targets=tuple(targets)))
        outputs = []
        for o in base.outputs:
            if o.source is not None and o.source[0] == inst:
                d_out = defn.output(o.source[1])
                src = d_out.source if d_out is not None else None
                o = replace(o, source=(ids[src[0]], src[1]) if src is not None and src[0] in ids else None)
            outputs.append(o)
        return (base.inputs, base.outputs), (tuple(inputs), tuple(outputs))

    def _plan(self, defn: SubgraphDef) -> tuple[list[Node], list[tuple[str, str, str, str]]]:
        g, inst, inner = self.graph, self.instance, defn.graph
        taken = set(g.nodes)
        ids: dict[str, str] = {}
        for nid in inner.nodes:
            new = g.new_id()
            while new in taken:
                new = g.new_id()
            taken.add(new)
            ids[nid] = new
        self._ids = ids
        values = {nid: dict(n.values) for nid, n in inner.nodes.items()}
        for i in defn.inputs:
            if i.widget is not None and (i.name in inst.values or i.default is not None):
                for t, p in i.targets:
                    values[t][p] = inst.values.get(i.name, i.default)
        for key, v in inst.values.items():  # per-instance overrides "inner.input" / "inner/deeper.input"
            where, dot, inp = key.rpartition(".")
            first, _, rest = where.partition(SEP)
            if dot and first in values:
                values[first][f"{rest}.{inp}" if rest else inp] = v
        origin = _center(list(inner.nodes.values()))
        at = inst.ui.get("pos", [0, 0])
        nodes = []
        for nid, n in inner.nodes.items():
            ui = copy.deepcopy(n.ui)
            p = ui.get("pos", origin)
            ui["pos"] = [round(float(at[0]) + float(p[0]) - origin[0]), round(float(at[1]) + float(p[1]) - origin[1])]
            nodes.append(Node(ids[nid], n.type, values[nid], n.mode, n.title, ui, dict(n.extra)))
        links = [(ids[lk.src], lk.src_output, ids[lk.dst], lk.dst_input) for lk in inner.links]
        for i in defn.inputs:
            feed = g.link_into(inst.id, i.name)
            if feed is not None:
                links += [(feed.src, feed.src_output, ids[t], p) for t, p in i.targets if t in ids]
        for lk in g.links_from(inst.id):
            o = defn.output(lk.src_output)
            if o is not None and o.source is not None and o.source[0] in ids:
                links.append((ids[o.source[0]], o.source[1], lk.dst, lk.dst_input))
        return nodes, links

    def redo(self) -> None:
        self.graph.remove_node(self.instance.id)
        for n in self.new_nodes:
            self.graph.insert_node(Node(n.id, n.type, dict(n.values), n.mode, n.title, copy.deepcopy(n.ui),
                                        dict(n.extra)))
        for args in self._new_links:
            self.graph.connect(*args)
        if self._parent is not None and self._parent_iface is not None:
            self.editor.set_interface(self._parent.def_id, *self._parent_iface[1])

    def undo(self) -> None:
        for n in reversed(self.new_nodes):
            if n.id in self.graph.nodes:
                self.graph.remove_node(n.id)
        self.graph.insert_node(self.instance)
        _relink(self.graph, self._inst_links)
        if self._parent is not None and self._parent_iface is not None:
            self.editor.set_interface(self._parent.def_id, *self._parent_iface[0])


class EditInterfaceCommand(QUndoCommand):
    """Set a definition's interface; instances follow: links and values of renamed ports
    move to the new name, those of removed ports are dropped (and come back on undo).

    Instances are updated in the workflow and inside its other definitions (library
    component files are not rewritten)."""

    def __init__(self, editor: SubgraphEditor, def_id: str, inputs: tuple[SubgraphInput, ...],
                 outputs: tuple[SubgraphOutput, ...], *, renamed_inputs: dict[str, str | None] | None = None,
                 renamed_outputs: dict[str, str | None] | None = None, name: str | None = None,
                 text: str = "Edit subgraph interface") -> None:
        super().__init__(text)
        self.editor, self.def_id = editor, def_id
        base = editor.session(def_id).base
        self.old = (base.inputs, base.outputs, base.name)
        self.new = (inputs, outputs, name)
        self.in_map = {k: v for k, v in (renamed_inputs or {}).items() if k != v}
        self.out_map = {k: v for k, v in (renamed_outputs or {}).items() if k != v}
        self._ops: list[tuple[Any, ...]] | None = None

    def redo(self) -> None:
        self.editor.set_interface(self.def_id, *self.new)
        if self._ops is None:
            self._ops = []
            for g in self._graphs_with_instances():
                for n in list(g.nodes.values()):
                    parsed = parse_type(n.type)
                    if parsed is not None and parsed[0] == self.def_id:
                        self._rewire(g, n)
        else:
            for op in self._ops:
                _apply(op, forward=True)

    def undo(self) -> None:
        for op in reversed(self._ops or []):
            _apply(op, forward=False)
        self.editor.set_interface(self.def_id, *self.old)

    def _graphs_with_instances(self) -> list[Graph]:
        """The workflow and the working graph of every definition holding an instance of this
        one (made on demand: rewiring inside a definition is an edit of it, like any other)."""
        root = self.editor.root
        users = [d for d, defn in root.subgraphs.items() if d != self.def_id and any(
            (parse_type(n.type) or ("",))[0] == self.def_id for n in defn.graph.nodes.values())]
        graphs = [root, *(self.editor.session(d).working for d in users),
                  *(s.working for s in self.editor.sessions.values())]
        return list({id(g): g for g in graphs}.values())

    def _rewire(self, g: Graph, n: Node) -> None:
        ops: list[tuple[Any, ...]] = []
        for old, new in self.in_map.items():
            lk = g.link_into(n.id, old)
            if lk is not None:
                ops.append(("unlink", g, lk))
                if new:
                    ops.append(("link", g, Link(lk.src, lk.src_output, n.id, new, lk.extra)))
            if old in n.values:
                ops.append(("unset", g, n.id, old, n.values[old]))
                if new:
                    ops.append(("set", g, n.id, new, n.values[old]))
        ctl = n.ui.get("seed_control")
        if isinstance(ctl, dict) and set(ctl) & set(self.in_map):  # a promoted seed's control follows its name
            new_ctl = {self.in_map.get(k, k): v for k, v in ctl.items() if self.in_map.get(k, k)}
            ops.append(("ui", g, n.id, "seed_control", (copy.deepcopy(ctl), new_ctl)))
        for lk in g.links_from(n.id):
            if lk.src_output in self.out_map:
                new = self.out_map[lk.src_output]
                ops.append(("unlink", g, lk))
                if new:
                    ops.append(("link", g, Link(n.id, new, lk.dst, lk.dst_input, lk.extra)))
        for op in ops:
            _apply(op, forward=True)
        assert self._ops is not None
        self._ops += ops


def _apply(op: tuple[Any, ...], *, forward: bool) -> None:
    kind, g = op[0], op[1]
    if kind == "ui":
        _, _, nid, key, (old, new) = op
        g.set_ui(nid, key, copy.deepcopy(new if forward else old))
    elif kind == "link" or kind == "unlink":
        lk: Link = op[2]
        add = (kind == "link") == forward
        if add:
            g.connect(lk.src, lk.src_output, lk.dst, lk.dst_input, extra=lk.extra)
        elif g.link_into(lk.dst, lk.dst_input) == lk:
            g.disconnect(lk.dst, lk.dst_input)
    else:
        _, _, nid, name, value = op
        if (kind == "set") == forward:
            g.set_value(nid, name, value)
        else:
            g.unset_value(nid, name)


class AddDefinitionCommand(QUndoCommand):
    """Add a definition the workflow lacks: a library component (registry.subgraphs) opened
    for editing, or one that came with pasted subgraph nodes."""

    def __init__(self, root: Graph, defn: SubgraphDef) -> None:
        super().__init__(f"Add subgraph {defn.name or defn.id} to the workflow")
        self.root, self.defn = root, replace(defn, graph=defn.graph.copy())

    def redo(self) -> None:
        self.root.set_subgraph(self.defn)

    def undo(self) -> None:
        self.defn = self.root.subgraphs.get(self.defn.id, self.defn)
        self.root.remove_subgraph(self.defn.id)


def promoted_input(defn: SubgraphDef, spec_input: Any, node_id: str, value: Any) -> SubgraphInput:
    """A new interface input promoting inner widget ``node_id.<input>`` (current value as default)."""
    taken = {i.name for i in defn.inputs}
    name, k = spec_input.name, 2
    while name in taken:
        name, k = f"{spec_input.name}_{k}", k + 1
    i = spec_input
    return SubgraphInput(name, i.type, ((node_id, i.name),), i.widget, value, i.min, i.max, i.step,
                         tuple(i.choice_list()) if i.choices is not None else None, i.multiline, i.optional,
                         i.tooltip)
