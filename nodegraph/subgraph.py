"""Subgraphs: reusable, nestable components, and the flattening that plans them.

A :class:`SubgraphDef` is a graph with a declared interface: typed inputs
(link-only, or with a widget, default and range exactly like a node input)
and outputs.  Each interface input lists the inner ``(node, input)`` pairs it
feeds; each output names the inner ``(node, output)`` it comes from.  A
workflow stores every definition once (``graph.subgraphs``); a registry may
hold more, loaded from standalone component files (a ``subgraphs/`` folder).

An *instance* is an ordinary node whose type names the definition:
``subgraph:<id>`` follows the definition as it is edited, ``subgraph:<id>@<n>``
pins version ``n`` (kept in the definition's ``history``).  Its ``values`` are
the promoted inputs by name; a key ``"inner.input"`` (or ``"a/b.input"`` for a
nested node) overrides one inner value for this instance only -- that is what
``--set outer/inner.input=V`` writes.

Why flatten instead of executing instances as nodes: the planner, validator,
cache and executor then work unchanged on plain nodes.  Inner nodes get path
ids (``outer/inner``), so every validation message names where the problem is,
and -- because cache keys of deterministic nodes never contain node ids --
wrapping nodes in a subgraph produces exactly the cache keys of the flat graph:
it never invalidates the cache, and two instances with equal inputs share work.
Flattening is iterative (explicit stacks), so nesting depth is not limited by
Python's recursion limit, and it costs O(total flattened nodes + links).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import ValidationIssue
from .graph import Graph, Link, Node
from .spec import Input, NodeSpec, Output, Widget

if TYPE_CHECKING:
    from .registry import Registry

PREFIX = "subgraph:"
SEP = "/"
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SubgraphError(ValueError):
    """A definition is inconsistent (bad interface, target node missing, …)."""


@dataclass(frozen=True)
class SubgraphInput:
    """One interface input.  ``targets`` are the inner ``(node id, input name)`` it feeds.

    With a ``widget`` it behaves like a node's widget input: the instance may hold a
    value (a *promoted widget*), else ``default`` is used; without one it is link-only.
    """

    name: str
    type: str
    targets: tuple[tuple[str, str], ...] = ()
    widget: Widget | None = None
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    multiline: bool = False
    optional: bool = False
    tooltip: str = ""
    # Fields of the file's port object this version does not know (kept for the next save).
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def as_input(self) -> Input:
        """The equivalent node input (for validation, the catalogue and the editor)."""
        return Input(self.name, self.type, self.widget, self.default, self.min, self.max, self.step,
                     self.choices, self.multiline, self.optional, self.tooltip)


@dataclass(frozen=True)
class SubgraphOutput:
    """One interface output, fed by inner output ``source`` (``None`` = not connected yet)."""

    name: str
    type: str
    source: tuple[str, str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # unknown file fields, kept


def _never_called(ctx: Any, **inputs: Any) -> Any:
    raise RuntimeError("a subgraph instance is flattened before running; it is never called itself")


@dataclass
class SubgraphDef:
    """A versioned component definition.  Treated as a value: edits replace it
    (:func:`define`), so a running plan or an older pinned version never changes
    under anyone's feet."""

    id: str
    graph: Graph
    inputs: tuple[SubgraphInput, ...] = ()
    outputs: tuple[SubgraphOutput, ...] = ()
    version: int = 1
    name: str = ""
    description: str = ""
    category: str = "subgraphs"
    history: dict[int, SubgraphDef] = field(default_factory=dict)  # older versions still pinnable
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The node type of an instance that follows this definition's latest version."""
        return PREFIX + self.id

    def input(self, name: str) -> SubgraphInput | None:
        return next((i for i in self.inputs if i.name == name), None)

    def output(self, name: str) -> SubgraphOutput | None:
        return next((o for o in self.outputs if o.name == name), None)

    def copy(self) -> SubgraphDef:
        """A copy whose inner graphs (this version's and the older ones) are independent, for
        snapshots: an editor may edit a definition's graph in place while a run plans from a copy."""
        return replace(self, graph=self.graph.copy(), history={v: old.copy() for v, old in self.history.items()},
                       extra=dict(self.extra))

    def at_version(self, version: int | None) -> SubgraphDef | None:
        if version is None or version == self.version:
            return self
        return self.history.get(version)

    def node_spec(self, type_id: str | None = None) -> NodeSpec:
        """The instance's interface as a :class:`NodeSpec` (never executed: instances are flattened)."""
        return NodeSpec(
            type_id=type_id or self.type, fn=_never_called, inputs=tuple(i.as_input() for i in self.inputs),
            outputs=tuple(Output(o.name, o.type) for o in self.outputs), version=self.version,
            category=self.category, display_name=self.name or self.id, description=self.description,
            output_node=not self.outputs, pack="subgraphs")

    def check(self) -> None:
        """Raise :class:`SubgraphError` naming the definition if its interface is inconsistent."""
        def fail(msg: str) -> None:
            raise SubgraphError(f"subgraph {self.id!r}: {msg}")

        if not _ID_RE.match(self.id or ""):
            fail("id must be letters, digits, '_', '.', '-' (no '/' or '@')")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            fail("version must be a positive integer")
        bad_ids = [nid for nid in self.graph.nodes if SEP in nid]
        if bad_ids:
            fail(f"inner node ids must not contain {SEP!r} (it separates the levels of a path): {bad_ids[:5]}")
        fed: dict[tuple[str, str], str] = {}
        for i in self.inputs:
            if not _NAME_RE.match(i.name):
                fail(f"input name {i.name!r} is not an identifier")
            if i.widget is not None:
                _check_widget_input(self.id, i)
            for nid, inp in i.targets:
                if nid not in self.graph.nodes:
                    fail(f"input {i.name!r} feeds node {nid!r}, which is not in the subgraph")
                if (nid, inp) in fed:
                    fail(f"inner input {nid}.{inp} is fed by both interface inputs {fed[(nid, inp)]!r} "
                         f"and {i.name!r}")
                if self.graph.link_into(nid, inp) is not None:
                    fail(f"inner input {nid}.{inp} is fed by interface input {i.name!r} and by a link")
                fed[(nid, inp)] = i.name
        for names, what in (([i.name for i in self.inputs], "input"), ([o.name for o in self.outputs], "output")):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                fail(f"{what} name(s) {sorted(dup)} declared twice")
        for o in self.outputs:
            if not _NAME_RE.match(o.name):
                fail(f"output name {o.name!r} is not an identifier")
            if o.source is not None and o.source[0] not in self.graph.nodes:
                fail(f"output {o.name!r} comes from node {o.source[0]!r}, which is not in the subgraph")


_ZERO = {Widget.INT: 0, Widget.SEED: 0, Widget.FLOAT: 0.0, Widget.STRING: "", Widget.BOOL: False}


def _check_widget_input(def_id: str, i: SubgraphInput) -> None:
    """Widget rules of node inputs; an *optional* promoted input may have no default
    (then the inner nodes keep their own values unless an instance sets one)."""
    from .spec import SpecError, _check_widget

    if i.default is None and i.optional and i.widget in _ZERO:
        probe_default = _ZERO[i.widget] if i.min is None else type(_ZERO[i.widget])(i.min)
        i = replace(i, default=probe_default)
    probe = NodeSpec(f"subgraph_{def_id}".replace("-", "_").replace(".", "_"), _never_called, (i.as_input(),))
    try:
        _check_widget(probe, i.as_input(), lambda msg: (_ for _ in ()).throw(SpecError(msg)))
    except SpecError as exc:
        raise SubgraphError(f"subgraph {def_id!r}: {exc}") from None


def parse_type(node_type: str) -> tuple[str, int | None] | None:
    """``"subgraph:hires@2"`` -> ``("hires", 2)``; ``None`` if not an instance type."""
    if not node_type.startswith(PREFIX):
        return None
    ident, at, ver = node_type[len(PREFIX):].rpartition("@")
    if at and ver.isdigit():
        return ident, int(ver)
    return node_type[len(PREFIX):], None


def is_instance(node_type: str) -> bool:
    return node_type.startswith(PREFIX)


def lookup(node_type: str, graph: Graph, registry: Registry | None = None) -> SubgraphDef | None:
    """The definition (at the pinned version) an instance type names: the workflow's own
    definitions first, then the registry's component library."""
    parsed = parse_type(node_type)
    if parsed is None:
        return None
    ident, version = parsed
    defn = graph.subgraphs.get(ident)
    if defn is None and registry is not None:
        defn = registry.subgraphs.get(ident)
    return defn.at_version(version) if defn is not None else None


def define(graph: Graph, defn: SubgraphDef) -> SubgraphDef:
    """Add or edit a definition of ``graph``.

    Editing one that exists makes a new version: every unpinned instance follows
    it at once, and the previous version moves into ``history`` so instances that
    pin it keep working.  Returns the stored definition."""
    defn.check()
    old = graph.subgraphs.get(defn.id)
    if old is not None:
        history = dict(old.history)
        history[old.version] = replace(old, history={})
        defn = replace(defn, version=max(old.version, *history) + 1, history=history)
    graph.set_subgraph(defn)
    return defn


# -- flattening -----------------------------------------------------------------------------


@dataclass
class Flat:
    """A graph with every instance expanded (node ids are paths), and what planning needs
    to speak about instances: issues found while expanding, interface specs of bypassed
    instances, which inner input each instance input became, and instance outputs.
    The flat nodes' ``ui``/``extra`` dicts are shared with the source graphs: read-only."""

    graph: Graph
    issues: list[ValidationIssue] = field(default_factory=list)
    specs: dict[str, NodeSpec] = field(default_factory=dict)  # node type -> spec (bypassed instances)
    boundary: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # leaf -> (instance, input)
    outputs: dict[str, dict[str, tuple[str, str] | None]] = field(default_factory=dict)  # instance -> out -> src
    instances: dict[str, SubgraphDef] = field(default_factory=dict)  # expanded instance path -> definition


def has_instances(graph: Graph) -> bool:
    return any(n.type.startswith(PREFIX) for n in graph.nodes.values())


@dataclass
class _Frame:
    prefix: str  # "" at top level, else "path/"
    graph: Graph
    chain: tuple[str, ...]  # definition ids enclosing this frame (cycle detection)
    muted: bool


def flatten(graph: Graph, registry: Registry | None = None,
            check_value: Callable[[Node, Input, list[ValidationIssue]], tuple[bool, Any]] | None = None,
            ) -> Flat:
    """Expand every (non-bypassed) instance, iteratively, into one flat graph.

    ``check_value(instance, input, issues)`` validates a promoted value against the
    interface input (the planner passes its own check, so ranges and choices are
    reported on the instance, e.g. ``outer.denoise``); it returns (ok, coerced value).
    """
    flat = Flat(Graph())
    flat.graph.meta, flat.graph.extra = graph.meta, graph.extra
    frames: list[_Frame] = []
    instance_nodes: dict[str, Node] = {}
    work = [_Frame("", graph, (), False)]
    while work:  # phase 1: nodes
        frame = work.pop()
        frames.append(frame)
        for node in frame.graph.nodes.values():
            path = frame.prefix + node.id
            defn = lookup(node.type, graph, registry) if node.type.startswith(PREFIX) else None
            if node.type.startswith(PREFIX) and defn is None:
                flat.issues.append(_unknown_definition(path, node, graph, registry))
            elif defn is not None and defn.id in frame.chain:
                flat.issues.append(ValidationIssue(
                    "cycle", f"subgraph {defn.id!r} contains itself (through {' -> '.join(frame.chain)})",
                    "remove the instance of the subgraph from its own definition", path, node.type))
                continue
            mode = "mute" if frame.muted else node.mode
            if defn is not None and mode != "bypass":
                flat.instances[path] = defn
                instance_nodes[path] = node
                work.append(_Frame(path + SEP, defn.graph, (*frame.chain, defn.id), mode == "mute"))
                continue
            if defn is not None:
                flat.specs[node.type] = defn.node_spec(node.type)
            if path not in flat.graph.nodes:
                flat.graph._put_quietly(Node(path, node.type, dict(node.values), mode, node.title, node.ui,
                                             node.extra))
            else:
                flat.issues.append(ValidationIssue(
                    "duplicate_id", f"node id {path!r} is also the path of a node inside a subgraph",
                    "rename the node (ids with '/' are reserved for nodes inside subgraphs)", path, node.type))
    for frame in frames:  # phase 2: links, now that every endpoint exists
        _flatten_links(flat, frame)
    _assign_values(flat, instance_nodes, check_value)
    for path in flat.instances:
        flat.outputs[path] = {o.name: _resolve_output(flat, path, o.name) for o in flat.instances[path].outputs}
    return flat


def _unknown_definition(path: str, node: Node, graph: Graph, registry: Registry | None) -> ValidationIssue:
    parsed = parse_type(node.type)
    ident, version = parsed if parsed else (node.type, None)
    known = graph.subgraphs.get(ident) or (registry.subgraphs.get(ident) if registry is not None else None)
    if known is not None and version is not None:
        kept = sorted([known.version, *known.history])
        return ValidationIssue("unknown_type", f"subgraph {ident!r} has no version {version} (kept: {kept})",
                               f"change the node type to {PREFIX}{ident} to follow the latest version",
                               path, node.type)
    return ValidationIssue("unknown_type", f"unknown subgraph {ident!r}",
                           "add its definition to the workflow, or put its component file in the subgraphs "
                           "folder", path, node.type)


def _resolve_output(flat: Flat, path: str, output: str) -> tuple[str, str] | None:
    """The flat ``(node, output)`` behind an instance output, through nested instances."""
    seen = 0
    while path in flat.instances:
        o = flat.instances[path].output(output)
        if o is None or o.source is None or seen > len(flat.instances):
            return None
        path, output = path + SEP + o.source[0], o.source[1]
        seen += 1
    return path, output


def _leaves(flat: Flat, path: str, name: str) -> list[tuple[str, str]]:
    """The flat ``(node, input)`` pairs an instance input ends up feeding (through nested instances)."""
    out: list[tuple[str, str]] = []
    stack = [(path, name)]
    while stack:
        p, n = stack.pop()
        if p not in flat.instances:
            out.append((p, n))
            continue
        i = flat.instances[p].input(n)
        for nid, inp in reversed(i.targets if i is not None else ()):
            stack.append((p + SEP + nid, inp))
    return out


def _flatten_links(flat: Flat, frame: _Frame) -> None:
    g = flat.graph
    links: Iterable[Link] = frame.graph.links
    for lk in [*links, *frame.graph.dangling_links]:
        src, dst = frame.prefix + lk.src, frame.prefix + lk.dst
        if src in flat.instances:
            resolved = _resolve_output(flat, src, lk.src_output)
            if resolved is None:
                flat.issues.append(ValidationIssue(
                    "dangling_link", f"output {lk.src_output!r} of subgraph node {src!r} is not connected "
                    "inside its definition", "connect it inside the subgraph, or use another output",
                    dst, None, lk.dst_input))
                continue
            src, out = resolved
        else:
            out = lk.src_output
        leaves = _leaves(flat, dst, lk.dst_input) if dst in flat.instances else [(dst, lk.dst_input)]
        for leaf, inp in leaves:
            if src in g.nodes and leaf in g.nodes and g.link_into(leaf, inp) is None:
                g._put_quietly(link=Link(src, out, leaf, inp, lk.extra))
            elif src in g.nodes and leaf in g.nodes:
                flat.issues.append(ValidationIssue(
                    "duplicate_link", f"input {inp!r} is fed twice (once through a subgraph input)",
                    "remove one of the two links", leaf, g.nodes[leaf].type, inp))
            else:
                g.dangling_links.append(Link(src, out, leaf, inp, lk.extra))


def _assign_values(flat: Flat, instances: Mapping[str, Node],
                   check_value: Callable[[Node, Input, list[ValidationIssue]], tuple[bool, Any]] | None) -> None:
    """Promoted values and per-instance overrides onto the inner nodes, outermost first
    (an outer instance's value wins over a nested instance's own value)."""
    g = flat.graph
    assigned: set[tuple[str, str]] = set()
    for path, node in instances.items():  # discovery order: parents before their children
        defn = flat.instances[path]
        by_outer = set(assigned)  # set by an enclosing instance: wins over anything set here
        for iface in defn.inputs:
            leaves = _leaves(flat, path, iface.name)
            for leaf in leaves:
                flat.boundary.setdefault(leaf, (path, iface.name))
            if iface.widget is None or (iface.name not in node.values and iface.default is None):
                continue
            if check_value is not None:
                ok, value = check_value(Node(path, node.type, node.values), iface.as_input(), flat.issues)
                if not ok:
                    assigned.update(leaves)  # reported on the instance; inner nodes keep quiet
                    continue
            else:
                value = node.values.get(iface.name, iface.default)
            for leaf, inp in leaves:
                if (leaf, inp) not in assigned and leaf in g.nodes:
                    g.nodes[leaf].values[inp] = value
                    assigned.add((leaf, inp))
        for key, value in node.values.items():
            if "." not in key:
                continue
            inner, _, inp = key.rpartition(".")
            target = path + SEP + inner
            leaves = _leaves(flat, target, inp) if target in flat.instances else [(target, inp)]
            if all(leaf in g.nodes for leaf, _ in leaves):
                for leaf, leaf_inp in leaves:
                    if (leaf, leaf_inp) not in by_outer:
                        g.nodes[leaf].values[leaf_inp] = value
                        assigned.add((leaf, leaf_inp))
            else:
                flat.issues.append(ValidationIssue(
                    "unknown_node", f"override {key!r} names inner node {inner!r}, which is not in subgraph "
                    f"{defn.id!r}", "fix or remove the override", path, node.type, key))


def extract(graph: Graph, registry: Registry, node_ids: Iterable[str], def_id: str, *,
            promote: Iterable[tuple[str, str]] = (), instance_id: str | None = None, name: str = ""
            ) -> tuple[SubgraphDef, Node]:
    """Turn the selected nodes of ``graph`` into a subgraph and one instance of it, in place.

    Links entering the selection become interface inputs (one per distinct upstream
    output), links leaving it become outputs, and the ``promote``d ``(node, input)``
    widgets become promoted inputs holding the current values.  The result runs exactly
    as before, with the same cache keys.  (The editor's "Convert to subgraph".)"""
    sel = list(dict.fromkeys(node_ids))
    chosen = set(sel)
    inner = Graph()
    for nid in sel:
        n = graph.node(nid)
        inner.add_node(n.type, n.values, id=n.id, mode=n.mode, title=n.title, ui=n.ui, extra=n.extra)
    incoming: dict[tuple[str, str], list[Link]] = {}
    outgoing: dict[tuple[str, str], list[Link]] = {}
    for lk in graph.links:
        if lk.src in chosen and lk.dst in chosen:
            inner.connect(lk.src, lk.src_output, lk.dst, lk.dst_input, extra=lk.extra)
        elif lk.dst in chosen:
            incoming.setdefault((lk.src, lk.src_output), []).append(lk)
        elif lk.src in chosen:
            outgoing.setdefault((lk.src, lk.src_output), []).append(lk)
    names: set[str] = set()
    inputs: list[SubgraphInput] = []
    for links in incoming.values():
        first = links[0]
        inputs.append(SubgraphInput(unique_name(first.dst_input, names),
                                    _port_type(graph, registry, first.dst, first.dst_input, True),
                                    tuple((lk.dst, lk.dst_input) for lk in links)))
    values: dict[str, Any] = {}
    for nid, inp_name in promote:
        spec = registry.get(graph.node(nid).type)
        inp = spec.input(inp_name) if spec is not None else None
        if inp is None or not inp.has_widget:
            raise SubgraphError(f"node {nid!r} has no widget input {inp_name!r} to promote")
        pname = unique_name(inp_name, names)
        default = graph.node(nid).values.get(inp_name, inp.default)
        inputs.append(SubgraphInput(pname, inp.type, ((nid, inp_name),), inp.widget, default, inp.min, inp.max,
                                    inp.step, tuple(inp.choice_list()) if inp.choices is not None else None,
                                    inp.multiline, inp.optional, inp.tooltip))
        values[pname] = default
        inner.unset_value(nid, inp_name)
    out_names: set[str] = set()
    outputs = [SubgraphOutput(unique_name(src[1], out_names), _port_type(graph, registry, src[0], src[1], False), src)
               for src in outgoing]
    defn = define(graph, SubgraphDef(def_id, inner, tuple(inputs), tuple(outputs), name=name))
    for nid in sel:
        graph.remove_node(nid)
    inst = graph.add_node(defn.type, values, id=instance_id)
    for iface, (src, out) in zip(inputs, incoming, strict=False):
        graph.connect(src, out, inst.id, iface.name)
    for o, links in zip(outputs, outgoing.values(), strict=True):
        for lk in links:
            graph.connect(inst.id, o.name, lk.dst, lk.dst_input, extra=lk.extra)
    return defn, inst


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... whichever is not in ``taken`` (which it is added to):
    how interface ports get distinct names, here and in the editor's commands."""
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def _port_type(graph: Graph, registry: Registry, nid: str, port: str, is_input: bool) -> str:
    spec = registry.get(graph.node(nid).type)
    found = (spec.input(port) if is_input else spec.output(port)) if spec is not None else None
    return found.type if found is not None else "*"


def inner_node(graph: Graph, path: str, registry: Registry | None = None
               ) -> tuple[list[Node], Node | None, SubgraphDef | None]:
    """Walk ``"outer/inner/…"``: (instance nodes on the way, the final node or None,
    the definition holding the final node or None at top level)."""
    parts = path.split(SEP)
    node = graph.nodes.get(parts[0])
    chain: list[Node] = []
    defn: SubgraphDef | None = None
    for part in parts[1:]:
        if node is None:
            return chain, None, defn
        defn = lookup(node.type, graph, registry)
        if defn is None:
            return chain, None, None
        chain.append(node)
        node = defn.graph.nodes.get(part)
    return chain, node, defn


__all__ = ["PREFIX", "SEP", "Flat", "SubgraphDef", "SubgraphError", "SubgraphInput", "SubgraphOutput", "define",
           "extract", "flatten", "has_instances", "inner_node", "is_instance", "lookup", "parse_type",
           "unique_name"]
