"""The graph model: nodes, links, groups — plain data with change notifications.

This is the single source of truth that the workflow file serialises, the
validator checks, the executor plans from and the GUI draws.  It knows nothing
about Qt or about what nodes compute.  Node ids are stable strings chosen by
the file (or allocated as increasing integers), never memory addresses, so
they survive save/load, copy/paste and undo.

Every mutation goes through a method that emits a :class:`GraphChange` to
subscribers; a view observes the model instead of owning it (the GUI's undo
stack drives these methods, and redraws from the notifications).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

_EMPTY: dict[str, Link] = {}  # shared empty mapping for nodes with no inputs (never mutated)

Mode = Literal["normal", "bypass", "mute"]
MODES: tuple[str, ...] = ("normal", "bypass", "mute")


@dataclass
class Node:
    """One node instance in a graph.

    ``values`` holds constants keyed by input name (never by position).
    ``ui`` holds layout (``pos``, ``size``, ``color``, ``collapsed``) and other
    editor-only state (e.g. a seed's "randomize after run"); it never affects
    execution.  ``extra`` keeps fields this version does not know, so a file
    written by a newer version survives a round trip.
    """

    id: str
    type: str
    values: dict[str, Any] = field(default_factory=dict)
    mode: str = "normal"
    title: str | None = None
    ui: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    """``src.src_output`` feeds ``dst.dst_input`` (ports referenced by name)."""

    src: str
    src_output: str
    dst: str
    dst_input: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Group:
    """A titled frame on the canvas; purely visual, kept beside the semantics."""

    id: str
    title: str = "Group"
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 400.0, 300.0)
    color: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphChange:
    """A notification.  ``kind`` is one of: node_added, node_removed,
    link_added, link_removed, value_changed, mode_changed, title_changed,
    ui_changed, group_added, group_removed, group_changed, meta_changed,
    subgraph_changed."""

    kind: str
    node_id: str | None = None
    key: str | None = None
    old: Any = None
    new: Any = None


Listener = Callable[[GraphChange], None]


class GraphError(ValueError):
    """An edit that cannot be applied (unknown node, input already fed…)."""


class Graph:
    """A mutable node graph.  Links are indexed both ways so that neighbour
    queries are O(degree), which keeps planning and validation linear."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._in: dict[str, dict[str, Link]] = {}  # dst -> input -> link
        self._out: dict[str, set[Link]] = {}  # src -> links
        self.groups: dict[str, Group] = {}
        self.meta: dict[str, Any] = {}  # description, name, view state…
        self.extra: dict[str, Any] = {}  # unknown top-level fields of the file
        # Links from a file whose end node does not exist: kept so validation can
        # report them and saving does not silently drop the user's data.
        self.dangling_links: list[Link] = []
        # Subgraph definitions by id (``nodegraph.subgraph.SubgraphDef``, treated as values:
        # an edit replaces the object), instantiated by nodes of type "subgraph:<id>".
        self.subgraphs: dict[str, Any] = {}
        self._listeners: list[Listener] = []
        self._next_id = 1

    # -- observation ----------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, change: GraphChange) -> None:
        for listener in list(self._listeners):
            listener(change)

    # -- ids ---------------------------------------------------------------------------
    def new_id(self) -> str:
        """Next free integer id as a string (ids in files may be any string)."""
        while str(self._next_id) in self.nodes or str(self._next_id) in self.groups:
            self._next_id += 1
        nid = str(self._next_id)
        self._next_id += 1
        return nid

    def _note_id(self, nid: str) -> None:
        if nid.isdigit():
            self._next_id = max(self._next_id, int(nid) + 1)

    # -- nodes -------------------------------------------------------------------------
    def add_node(
        self,
        type: str,
        values: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        mode: str = "normal",
        title: str | None = None,
        ui: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Node:
        nid = self.new_id() if id is None else str(id)
        if nid in self.nodes:
            raise GraphError(f"node id {nid!r} already exists")
        if not nid:
            raise GraphError("node id must not be empty")
        if mode not in MODES:
            raise GraphError(f"node {nid!r}: mode must be one of {MODES}, not {mode!r}")
        n = Node(nid, type, dict(values or {}), mode, title, dict(ui or {}), dict(extra or {}))
        self.nodes[nid] = n
        self._note_id(nid)
        self._emit(GraphChange("node_added", nid, new=n))
        return n

    def insert_node(self, node: Node) -> Node:
        """Re-insert a previously removed node object (used by undo)."""
        if node.id in self.nodes:
            raise GraphError(f"node id {node.id!r} already exists")
        self.nodes[node.id] = node
        self._note_id(node.id)
        self._emit(GraphChange("node_added", node.id, new=node))
        return node

    def remove_node(self, nid: str) -> tuple[Node, list[Link]]:
        """Remove a node and every link touching it; returns both (for undo)."""
        n = self.node(nid)
        # dict.fromkeys: a self-loop is both an input and an output link; remove (and report) it once.
        removed = list(dict.fromkeys([*self._in.get(nid, {}).values(), *self._out.get(nid, ())]))
        for link in removed:
            self._remove_link(link)
        del self.nodes[nid]
        self._in.pop(nid, None)
        self._out.pop(nid, None)
        self._emit(GraphChange("node_removed", nid, old=n))
        return n, removed

    def node(self, nid: str) -> Node:
        try:
            return self.nodes[nid]
        except KeyError:
            raise GraphError(f"no node with id {nid!r}") from None

    def __contains__(self, nid: object) -> bool:
        return nid in self.nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def set_value(self, nid: str, name: str, value: Any) -> None:
        n = self.node(nid)
        old = n.values.get(name)
        n.values[name] = value
        self._emit(GraphChange("value_changed", nid, name, old, value))

    def unset_value(self, nid: str, name: str) -> None:
        n = self.node(nid)
        if name in n.values:
            old = n.values.pop(name)
            self._emit(GraphChange("value_changed", nid, name, old, None))

    def set_mode(self, nid: str, mode: str) -> None:
        if mode not in MODES:
            raise GraphError(f"node {nid!r}: mode must be one of {MODES}, not {mode!r}")
        n = self.node(nid)
        old, n.mode = n.mode, mode
        self._emit(GraphChange("mode_changed", nid, "mode", old, mode))

    def set_title(self, nid: str, title: str | None) -> None:
        n = self.node(nid)
        old, n.title = n.title, title
        self._emit(GraphChange("title_changed", nid, "title", old, title))

    def set_ui(self, nid: str, key: str, value: Any) -> None:
        n = self.node(nid)
        old = n.ui.get(key)
        n.ui[key] = value
        self._emit(GraphChange("ui_changed", nid, key, old, value))

    # -- links -------------------------------------------------------------------------
    def connect(self, src: str, src_output: str, dst: str, dst_input: str,
                extra: dict[str, Any] | None = None) -> Link:
        """Link an output to an input, replacing whatever fed that input before.

        Type compatibility is not checked here (the model is type-agnostic);
        the validator and the editor check it against the registry.
        """
        self.node(src)
        self.node(dst)
        old = self._in.get(dst, {}).get(dst_input)
        if old is not None:
            self._remove_link(old)
        link = Link(src, src_output, dst, dst_input, dict(extra or {}))
        self._in.setdefault(dst, {})[dst_input] = link
        self._out.setdefault(src, set()).add(link)
        self._emit(GraphChange("link_added", dst, dst_input, old, link))
        return link

    def _put_quietly(self, node: Node | None = None, link: Link | None = None) -> None:
        """Insert a node or a link into a graph nobody observes yet, without notifications or
        checks (the caller guarantees both ends exist and the input is free).  For builders of
        derived graphs such as ``subgraph.flatten``, where per-edit events cost more than the work."""
        if node is not None:
            self.nodes[node.id] = node
        if link is not None:
            self._in.setdefault(link.dst, {})[link.dst_input] = link
            self._out.setdefault(link.src, set()).add(link)

    def disconnect(self, dst: str, dst_input: str) -> Link | None:
        link = self._in.get(dst, {}).get(dst_input)
        if link is not None:
            self._remove_link(link)
        return link

    def _remove_link(self, link: Link) -> None:
        ins = self._in.get(link.dst)
        if ins is not None and ins.get(link.dst_input) == link:
            del ins[link.dst_input]
        outs = self._out.get(link.src)
        if outs is not None:
            outs.discard(link)
        self._emit(GraphChange("link_removed", link.dst, link.dst_input, link, None))

    def link_into(self, dst: str, dst_input: str) -> Link | None:
        return self._in.get(dst, {}).get(dst_input)

    def links_into(self, dst: str) -> dict[str, Link]:
        return dict(self._in.get(dst, {}))

    def inputs_view(self, dst: str) -> Mapping[str, Link]:
        """Read-only live view of the links into ``dst`` (no copy; for hot paths)."""
        return MappingProxyType(self._in.get(dst, _EMPTY))

    def links_from(self, src: str) -> list[Link]:
        return sorted(self._out.get(src, ()), key=lambda lk: (lk.dst, lk.dst_input))

    @property
    def links(self) -> list[Link]:
        out: list[Link] = []
        for nid in self.nodes:
            out.extend(self._in.get(nid, {}).values())
        return out

    # -- groups ------------------------------------------------------------------------
    def add_group(self, title: str = "Group", bounds: tuple[float, float, float, float] = (0, 0, 400, 300),
                  color: str | None = None, *, id: str | None = None,
                  extra: dict[str, Any] | None = None) -> Group:
        gid = id or f"g{self.new_id()}"
        if gid in self.groups:
            raise GraphError(f"group id {gid!r} already exists")
        g = Group(gid, title, tuple(float(v) for v in bounds), color, dict(extra or {}))  # type: ignore[arg-type]
        self.groups[gid] = g
        self._emit(GraphChange("group_added", None, gid, None, g))
        return g

    def remove_group(self, gid: str) -> Group:
        g = self.groups.pop(gid)
        self._emit(GraphChange("group_removed", None, gid, g, None))
        return g

    def update_group(self, gid: str, **changes: Any) -> None:
        g = self.groups[gid]
        for key, value in changes.items():
            if key not in ("title", "bounds", "color"):
                raise GraphError(f"group has no field {key!r}")
            old = getattr(g, key)
            setattr(g, key, tuple(value) if key == "bounds" else value)
            self._emit(GraphChange("group_changed", None, f"{gid}.{key}", old, value))

    def set_meta(self, key: str, value: Any) -> None:
        old = self.meta.get(key)
        self.meta[key] = value
        self._emit(GraphChange("meta_changed", None, key, old, value))

    # -- subgraph definitions ----------------------------------------------------------------
    def set_subgraph(self, definition: Any) -> None:
        """Store (or replace) a subgraph definition; see ``nodegraph.subgraph.define``,
        which also versions it.  Every instance follows the new definition."""
        old = self.subgraphs.get(definition.id)
        self.subgraphs[definition.id] = definition
        self._emit(GraphChange("subgraph_changed", None, definition.id, old, definition))

    def remove_subgraph(self, def_id: str) -> Any:
        old = self.subgraphs.pop(def_id)
        self._emit(GraphChange("subgraph_changed", None, def_id, old, None))
        return old

    # -- copying -------------------------------------------------------------------------
    def copy(self) -> Graph:
        """Deep copy without listeners (the executor plans from a snapshot so the
        editor can keep editing while a run is in progress)."""
        g = Graph()
        # Per-node dict copies, not a full deepcopy: values are replaced, never
        # mutated in place, and this keeps a 10,000-node snapshot in milliseconds.
        g.nodes = {
            nid: Node(n.id, n.type, dict(n.values), n.mode, n.title, dict(n.ui), dict(n.extra))
            for nid, n in self.nodes.items()
        }
        g._in = {dst: dict(ins) for dst, ins in self._in.items()}
        g._out = {src: set(outs) for src, outs in self._out.items()}
        g.groups = {gid: Group(gr.id, gr.title, gr.bounds, gr.color, copy_data(gr.extra))
                    for gid, gr in self.groups.items()}
        g.meta = copy_data(self.meta)
        g.extra = copy_data(self.extra)
        g.dangling_links = list(self.dangling_links)
        # Definitions hold graphs an editor may edit in place: the snapshot gets its own.
        g.subgraphs = {sid: d.copy() for sid, d in self.subgraphs.items()}
        g._next_id = self._next_id
        return g


def copy_data(value: Any) -> Any:
    """Deep copy of JSON-like data (dicts, lists, tuples of scalars) without recursion: ``meta`` and
    unknown fields come from files, which may nest them a thousand levels deep, and
    ``copy.deepcopy`` overflows the stack at a third of that.  Other objects are deep-copied whole."""
    if not isinstance(value, (dict, list, tuple)):
        return copy.deepcopy(value)
    root: list[Any] = [None]
    # (source container, destination parent, key in parent)
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    tuples: list[tuple[Any, Any, list[Any]]] = []  # tuples are rebuilt once their items are copied
    while stack:
        src, parent, key = stack.pop()
        if isinstance(src, dict):
            dst: Any = {}
            items = src.items()
        elif isinstance(src, (list, tuple)):
            dst = [None] * len(src)
            items = enumerate(src)
            if isinstance(src, tuple):
                tuples.append((parent, key, dst))
        else:
            parent[key] = copy.deepcopy(src)
            continue
        parent[key] = dst
        for k, v in items:
            if isinstance(v, (dict, list, tuple)):
                stack.append((v, dst, k))
            else:
                dst[k] = v if isinstance(v, (str, int, float, bool, type(None))) else copy.deepcopy(v)
    for parent, key, items in reversed(tuples):  # innermost last-pushed first: children before parents
        parent[key] = tuple(items)
    return root[0]
