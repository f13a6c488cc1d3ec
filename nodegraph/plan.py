"""Validation, planning and cache keys — one linear pass over the graph.

Given a graph and the output nodes wanted, :func:`build_plan` works out which
nodes must run, in which order, with which inputs, and the cache key of each.
Everything is iterative (explicit stacks and Kahn's algorithm), so a
100,000-node chain is as fine as a 10-node one, and every step is O(nodes +
links).

Semantics:

* **bypass**: a bypassed node is skipped and each of its outputs is replaced
  by its first linked input of the same type (as in ComfyUI); if there is none
  the consumer falls back to its own value/default, or gets a validation error.
* **mute**: a muted node does not run, nor does anything that *requires* its
  output (reported as skipped); optional inputs fed by it are just left empty.
* **cache key** of a node = hash(type id, type version, its constant inputs,
  its fingerprint, the keys of the upstream outputs it reads).  Each key is
  computed once from its parents' fixed-size keys, so a re-run costs O(N),
  and two identical branches get identical keys (and run once).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import NodeInputError, ValidationIssue, WorkflowInvalid
from .graph import Graph, Node
from .paths import PATH_POLICY
from .preflight import run_preflight
from .registry import Registry
from .spec import Input, NodeSpec, Widget, call_with_settings, coerce_value, expected_value, explain_value_error
from .subgraph import PREFIX as SUBGRAPH_PREFIX
from .subgraph import Flat, flatten, has_instances
from .types import compatible

Source = tuple[str, str]  # (node id, output name)
_MUTED = ("", "<muted>")
_NO_BOUNDARY: Mapping[tuple[str, str], tuple[str, str]] = {}


@dataclass
class Plan:
    """What to run.  ``order`` is topological; ``sources[n][input]`` the effective
    upstream (after bypass); ``constants[n]`` the coerced values passed as-is."""

    targets: list[str]
    order: list[str]
    specs: dict[str, NodeSpec]
    sources: dict[str, dict[str, Source]]
    constants: dict[str, dict[str, Any]]
    keys: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # node id -> reason
    consumers: dict[str, int] = field(default_factory=dict)  # node id -> planned readers
    # The graph the ids above refer to: the caller's graph, or its flattened copy when it
    # holds subgraph instances (inner nodes then have path ids such as "outer/inner").
    graph: Graph | None = None
    # Requested subgraph instances: instance id -> {output name: (flat node, output)}.
    aliases: dict[str, dict[str, Source]] = field(default_factory=dict)


def with_specs(registry: Registry, extra: Mapping[str, NodeSpec]) -> Registry:
    """``registry`` answering ``get``/``in`` also for ``extra`` specs (the interfaces of
    bypassed subgraph instances in a flattened graph); ``registry`` itself when there are none."""
    return _Specs(registry, extra) if extra else registry  # type: ignore[return-value]


class _Specs:
    """The registry plus the interface specs of bypassed subgraph instances (what
    ``registry.get`` answers during planning)."""

    def __init__(self, registry: Registry, extra: Mapping[str, NodeSpec]) -> None:
        self._registry, self._extra = registry, extra

    def get(self, type_id: str) -> NodeSpec | None:
        return self._extra.get(type_id) or self._registry.get(type_id)

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._extra or type_id in self._registry


def default_targets(graph: Graph, registry: Registry) -> list[str]:
    """All output nodes that are not muted or bypassed, in file order."""
    out = []
    for n in graph:
        spec = registry.get(n.type)
        if spec is not None and spec.output_node and n.mode == "normal":
            out.append(n.id)
    return out


def _resolve_source(graph: Graph, registry: Registry, link_src: Source, want: str | None = None) -> Source | None:
    """Follow bypassed nodes upstream to the output that really feeds a link.

    Returns ``None`` when a bypassed node has no input of a matching type to pass
    through, and ``_MUTED`` when the chain ends in a muted node.  ``want`` is the type
    the consumer expects, used to bypass nodes whose type is unknown (see
    :func:`unknown_pass_through`).
    """
    src, out = link_src
    seen: set[str] = set()
    while True:
        node = graph.nodes.get(src)
        if node is None:
            return link_src  # dangling: reported by validation
        if node.mode == "mute":
            return _MUTED
        if node.mode != "bypass":
            return src, out
        if src in seen:
            return None  # bypass loop
        seen.add(src)
        spec = registry.get(node.type)
        links = graph.inputs_view(src)
        if spec is None:
            chosen_name = unknown_pass_through(graph, registry, node, out, want)
            if chosen_name is None:
                return None
        else:
            o = spec.output(out)
            if o is None:
                return None
            candidates = [i for i in spec.inputs if i.name in links]
            exact = [i for i in candidates if i.type == o.type]
            loose = [i for i in candidates if compatible(o.type, i.type) or compatible(i.type, o.type)]
            chosen = (exact or loose or [None])[0]
            if chosen is None:
                return None
            chosen_name = chosen.name
        lk = links[chosen_name]
        src, out = lk.src, lk.src_output


def _output_type(graph: Graph, registry: Registry, src: str, out: str) -> str | None:
    """Declared type of output ``out`` of node ``src`` (spec, else the node's ``extra["ports"]``)."""
    node = graph.nodes.get(src)
    if node is None:
        return None
    spec = registry.get(node.type)
    if spec is not None:
        o = spec.output(out)
        return o.type if o is not None else None
    ports = node.extra.get("ports")
    outs = ports.get("outputs") if isinstance(ports, dict) else None
    t = outs.get(out) if isinstance(outs, dict) else None
    return t if isinstance(t, str) else None


def unknown_pass_through(graph: Graph, registry: Registry, node: Node, out: str, want: str | None) -> str | None:
    """Which input a bypassed node of an *unknown* type (an imported placeholder) passes
    to output ``out``: as ComfyUI's bypass does, the first linked input whose type matches
    the output's type -- declared in ``extra["ports"]`` by the importer when the file says
    it, else the type the consumer expects.  This lets a user bypass an unknown node and run."""
    wanted = _output_type(graph, registry, node.id, out) or want
    if wanted is None or wanted == "*":
        return None
    ports = node.extra.get("ports")
    declared = ports.get("inputs") if isinstance(ports, dict) and isinstance(ports.get("inputs"), dict) else {}
    links = graph.inputs_view(node.id)
    order = [n for n in declared if n in links] + sorted(n for n in links if n not in declared)
    for exact in (True, False):
        for name in order:
            lk = links[name]
            t = declared.get(name) if isinstance(declared.get(name), str) else None
            t = t or _output_type(graph, registry, lk.src, lk.src_output)
            if t is not None and (t == wanted if exact else compatible(t, wanted)):
                return name
    return None


def _passed_through_type(graph: Graph, registry: Registry, link: Any, resolved: Source) -> str | None:
    """Type of the output that really arrives when ``link`` was resolved through bypassed
    nodes (``None`` when nothing was bypassed or the type is unknown)."""
    if resolved == _MUTED or resolved == (link.src, link.src_output):
        return None
    node = graph.nodes.get(resolved[0])
    spec = registry.get(node.type) if node is not None else None
    out = spec.output(resolved[1]) if spec is not None else None
    return out.type if out is not None else None


def _issue(kind: str, node: Node | None, message: str, fix: str, input: str | None = None) -> ValidationIssue:
    return ValidationIssue(kind, message, fix, node.id if node else None, node.type if node else None, input)


def _check_constant(node: Node, spec: NodeSpec, name: str, issues: list[ValidationIssue],
                    settings: Mapping[str, Any] | None = None) -> tuple[bool, Any]:
    """Validate and coerce one constant input; returns (present, value)."""
    inp = spec.input(name)
    assert inp is not None
    if name in node.values:
        raw = node.values[name]
    elif inp.default is not None:
        raw = inp.default
    else:
        if not inp.optional:
            issues.append(_issue("missing_input", node, "required input has no value and no link",
                                 f"set a value for {name!r} or link an output of type {inp.type} to it", name))
        return False, None
    try:
        value = coerce_value(inp, raw)
    except (TypeError, ValueError) as exc:
        issues.append(_issue("bad_value", node, f"value {raw!r} is invalid: {explain_value_error(raw, exc)}",
                             f"give {name!r} {expected_value(inp)}", name))
        return False, None
    if inp.widget in (Widget.INT, Widget.FLOAT, Widget.SEED):
        if (inp.min is not None and value < inp.min) or (inp.max is not None and value > inp.max):
            issues.append(_issue("out_of_range", node, f"value {value} is outside [{inp.min}, {inp.max}]",
                                 f"choose a value for {name!r} between {inp.min} and {inp.max}", name))
            return False, None
    elif inp.widget is Widget.COMBO:
        try:
            choices = inp.choice_list(settings)
        except Exception as exc:
            issues.append(_issue("bad_value", node, f"cannot list choices: {exc}",
                                 "check the node pack's configuration", name))
            return False, None
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:10]) + (" …" if len(choices) > 10 else "")
            fix = f"pick one of: {shown}" if choices else "no choices are available; add the files it lists"
            if callable(inp.choices):  # a list built at run time: in practice the files of a models folder
                folder = getattr(inp.choices, "folder", None) or "the folder this node lists"
                fix += (f" (or put the file in {folder}, under ./models, --models-dir or "
                        "$NODEGRAPH_MODELS_DIR)")
            issues.append(_issue("not_in_choices", node, f"{value!r} is not an available choice", fix, name))
            return False, None
    return True, value


def _check_node(graph: Graph, registry: Registry, node: Node, spec: NodeSpec,
                issues: list[ValidationIssue], settings: Mapping[str, Any] | None,
                dangling_into: frozenset[tuple[str, str]] = frozenset(),
                boundary: Mapping[tuple[str, str], tuple[str, str]] = _NO_BOUNDARY,
                ) -> tuple[dict[str, Source], dict[str, Any]]:
    """Per-node checks; returns the effective sources and coerced constants.

    Only this node's own issues (``issues[first:]``) and the dangling links into
    it are consulted to avoid double-blaming an input: scanning every issue so
    far would make validating a graph with many errors O(N^2)."""
    first = len(issues)
    sources: dict[str, Source] = {}
    constants: dict[str, Any] = {}
    for name, lk in graph.inputs_view(node.id).items():
        inp = spec.input(name)
        if inp is None:
            issues.append(_issue("unknown_input", node, f"a link feeds input {name!r}, which this node type "
                                 "does not have", "delete the link (the node type may have changed)", name))
            continue
        src_node = graph.nodes.get(lk.src)
        src_spec = registry.get(src_node.type) if src_node else None
        if src_node is not None and src_spec is not None:
            out = src_spec.output(lk.src_output)
            if out is None:
                issues.append(_issue("dangling_link", node, f"linked from output {lk.src_output!r} of node "
                                     f"{lk.src!r} ({src_node.type}), which has no such output",
                                     f"reconnect {name!r} to one of {src_spec.output_names()}", name))
                continue
            if not compatible(out.type, inp.type):
                issues.append(_issue("type_mismatch", node, f"expects {inp.type} but is linked to output "
                                     f"{lk.src_output!r} of node {lk.src!r} ({src_node.type}), which is {out.type}",
                                     f"connect an output of type {inp.type} to {name!r} instead", name))
                continue
        resolved = _resolve_source(graph, registry, (lk.src, lk.src_output), inp.type)
        if resolved is None:
            if inp.optional or inp.has_widget:
                pass  # fall back to the node's own value/default below
            else:
                issues.append(_issue("bypass_unresolved", node, f"input comes from bypassed node {lk.src!r}, "
                                     f"which has no input of type {inp.type} to pass through",
                                     f"mute node {lk.src!r} instead, or un-bypass it", name))
                continue
        else:
            passed = _passed_through_type(graph, registry, lk, resolved)
            if passed is not None and not compatible(passed, inp.type):
                # A bypassed node may pass a loosely matching input (e.g. a "*" one) through.
                issues.append(_issue("type_mismatch", node, f"expects {inp.type} but bypassed node {lk.src!r} "
                                     f"passes {resolved[0]!r}.{resolved[1]} of type {passed} through",
                                     f"un-bypass {lk.src!r}, or mute it", name))
                continue
            sources[name] = resolved
            continue
    for inp in spec.inputs:
        if inp.name in sources:
            continue
        if inp.has_widget:
            present, value = _check_constant(node, spec, inp.name, issues, settings)
            if present:
                constants[inp.name] = value
        elif (not inp.optional and (node.id, inp.name) not in dangling_into
              and not any(i.input == inp.name for i in issues[first:])):
            kind = "any type" if inp.type == "*" else f"type {inp.type}"
            outer = boundary.get((node.id, inp.name))
            if outer is not None:  # fed through a subgraph input: the fix is on the instance
                issues.append(_issue("missing_input", node, f"required input of {kind} is not connected: it "
                                     f"comes from input {outer[1]!r} of subgraph node {outer[0]!r}",
                                     f"link an output of {kind} to input {outer[1]!r} of node {outer[0]!r}",
                                     inp.name))
                continue
            issues.append(_issue("missing_input", node, f"required input of {kind} is not connected",
                                 f"link an output of {kind} to {inp.name!r}", inp.name))
    return sources, constants


def _find_cycles(nodes: Iterable[str], deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (or a self-loop),
    via an iterative Tarjan — no recursion, so no recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(deps.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(deps.get(w, ()))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in deps.get(v, ()):
                    cycles.append(sorted(comp))
    return cycles


def build_plan(
    graph: Graph,
    registry: Registry,
    targets: Sequence[str] | None = None,
    *,
    scope: str = "needed",
    run_nonce: str | None = None,
    output_dir: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Plan:
    """Validate and plan; raises :class:`WorkflowInvalid` listing *every* problem.

    ``scope="needed"`` checks only what the targets depend on (what a run
    needs); ``scope="all"`` checks every node (what an editor shows).
    A :class:`~nodegraph.paths.PathPolicy` in ``settings[PATH_POLICY]`` (the
    server sets one) confines inputs declared ``path=`` to its folders.
    """
    issues: list[ValidationIssue] = []
    path_policy = (settings or {}).get(PATH_POLICY)
    requested_targets = list(targets) if targets is not None else None
    flat: Flat | None = None
    if has_instances(graph):  # expand subgraph instances first; everything below sees plain nodes
        flat = _flatten(graph, registry, settings)
        graph, issues = flat.graph, list(flat.issues)
        registry = with_specs(registry, flat.specs)
        if targets is not None:
            targets = _instance_targets(flat, targets, registry)
    dangling_into = frozenset((lk.dst, lk.dst_input) for lk in graph.dangling_links)
    for lk in graph.dangling_links:
        missing = lk.src if lk.src not in graph.nodes else lk.dst
        dst = graph.nodes.get(lk.dst)
        issues.append(_issue("dangling_link", dst, f"link {lk.src}.{lk.src_output} -> {lk.dst}.{lk.dst_input} "
                             f"refers to node {missing!r}, which does not exist",
                             "delete the link or restore the missing node", lk.dst_input if dst else None))

    explicit_targets = targets is not None
    requested = set(requested_targets or ())
    if targets is None:
        targets = default_targets(graph, registry)
        if not targets and scope == "needed":
            issues.append(ValidationIssue("no_outputs", "the workflow has no output node to run",
                                          "add an output node (e.g. Save Image) or un-mute one"))
    else:
        for t in targets:
            if t not in graph.nodes:
                issues.append(ValidationIssue("unknown_node", f"requested output node {t!r} does not exist",
                                              f"use one of the node ids: {', '.join(list(graph.nodes)[:20])}"))
        targets = [t for t in targets if t in graph.nodes]

    # 1. Which nodes are needed: walk upstream from the targets (iteratively).
    if scope == "all":
        needed_order = [n.id for n in graph if n.mode == "normal"]
    else:
        needed_order = []
        seen: set[str] = set()
        stack = [t for t in reversed(targets) if graph.nodes[t].mode == "normal"]
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            needed_order.append(nid)
            nspec = registry.get(graph.nodes[nid].type)
            for lk in graph.inputs_view(nid).values():
                ninp = nspec.input(lk.dst_input) if nspec is not None else None
                resolved = _resolve_source(graph, registry, (lk.src, lk.src_output), ninp.type if ninp else None)
                if resolved and resolved != _MUTED and resolved[0] in graph.nodes and resolved[0] not in seen:
                    stack.append(resolved[0])

    # 2. Per-node checks.
    specs: dict[str, NodeSpec] = {}
    sources: dict[str, dict[str, Source]] = {}
    constants: dict[str, dict[str, Any]] = {}
    for nid in needed_order:
        node = graph.nodes[nid]
        spec = registry.get(node.type)
        if spec is None and node.type.startswith(SUBGRAPH_PREFIX) and flat is not None:
            continue  # an unknown subgraph: already reported by flattening
        if spec is None:
            issues.append(_issue("unknown_type", node, f"unknown node type {node.type!r}",
                                 "install the node pack that provides it, or delete the node"))
            continue
        specs[nid] = spec
        sources[nid], constants[nid] = _check_node(graph, registry, node, spec, issues, settings, dangling_into,
                                                   flat.boundary if flat is not None else _NO_BOUNDARY)
        if path_policy is not None:  # before fingerprints: a refused path is never looked at
            issues.extend(path_policy.confine_node(node.id, spec, sources[nid], constants[nid]))
    if scope != "all" and not explicit_targets:
        # Running "everything": a node whose type is unknown might be an output node of a
        # pack that is not installed, and skipping it would silently drop an output.
        checked = set(needed_order)
        for node in graph:
            # (bypassed ones pass their inputs through; unknown subgraphs were reported by flattening)
            if (node.id not in checked and node.mode == "normal" and node.type not in registry
                    and not node.type.startswith(SUBGRAPH_PREFIX)):
                issues.append(_issue("unknown_type", node, f"unknown node type {node.type!r}",
                                     "install the node pack that provides it, or delete (or mute) the node"))

    # 3. Topological order (Kahn) over the checked nodes; leftovers are cycles.
    deps: dict[str, list[str]] = {
        nid: [s for s, _ in src.values() if s in specs] for nid, src in sources.items()
    }
    order = _topological(list(specs), deps)
    if len(order) < len(specs):
        in_order = set(order)
        rest = [n for n in specs if n not in in_order]
        for comp in _find_cycles(rest, deps):
            first = graph.nodes[comp[0]]
            issues.append(_issue("cycle", first, f"nodes {comp} form a cycle",
                                 "remove one of the links between them; a graph must not loop"))

    # 4. Fingerprints (may blame an input, e.g. a file that does not exist).
    fingerprints: dict[str, Any] = {}
    if not issues:
        for nid in order:
            spec = specs[nid]
            if spec.fingerprint is not None:
                try:
                    fingerprints[nid] = call_with_settings(spec.fingerprint, settings, constants[nid])
                except NodeInputError as exc:
                    issues.append(_issue("bad_value", graph.nodes[nid], exc.message, exc.fix or "fix the value",
                                         exc.input))
                except Exception as exc:
                    issues.append(_issue("bad_value", graph.nodes[nid], f"cannot inspect inputs: {exc}",
                                         "check the node's inputs"))

    # 4b. Preflight hooks: values refused before running, results too large for the machine.  Run even
    # when other problems were found (a missing model file should not hide a 1 TiB latent), skipping the
    # nodes already blamed.
    blamed = {i.node_id for i in issues}
    issues += run_preflight(graph, [n for n in order if n not in blamed], specs, sources, constants, settings)

    if issues:
        raise WorkflowInvalid(issues)

    plan = Plan(list(targets), [], specs, sources, constants, graph=graph)
    if flat is not None and explicit_targets:
        plan.aliases = {t: {o: src for o, src in outs.items() if src is not None}
                        for t, outs in flat.outputs.items() if t in requested}
    # 5. Mute propagation: drop nodes that require a muted/skipped output.
    for nid in order:
        spec = specs[nid]
        for name, src in list(sources[nid].items()):
            if src == _MUTED or src[0] in plan.skipped:
                inp = spec.input(name)
                assert inp is not None
                del sources[nid][name]
                if inp.has_widget:
                    present, value = _check_constant(graph.nodes[nid], spec, name, [], settings)
                    if present:
                        constants[nid][name] = value
                        continue
                if not inp.optional:
                    plan.skipped[nid] = f"input {name!r} comes from a muted node"
                    break
        if nid not in plan.skipped:
            plan.order.append(nid)
    for t in plan.targets:
        if graph.nodes[t].mode != "normal":
            plan.skipped.setdefault(t, "node is " + {"bypass": "bypassed", "mute": "muted"}[graph.nodes[t].mode])

    # 6. Cache keys and reader counts, one pass in topological order.
    nonce = run_nonce or uuid.uuid4().hex
    for nid in plan.order:
        spec = specs[nid]
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{spec.type_id}\x00{spec.version}\x00".encode())
        h.update(_canonical(constants[nid]))
        if nid in fingerprints:
            h.update(b"\x01fp")
            h.update(_canonical(fingerprints[nid]))
        for name in sorted(sources[nid]):
            src, out = sources[nid][name]
            h.update(f"\x02{name}\x00{plan.keys[src]}\x00{out}".encode())
            plan.consumers[src] = plan.consumers.get(src, 0) + 1
        if spec.output_node and output_dir is not None:
            h.update(f"\x04{output_dir}".encode())
        if not spec.deterministic:
            h.update(f"\x03{nonce}\x00{nid}".encode())
        plan.keys[nid] = h.hexdigest()
    return plan


def _flatten(graph: Graph, registry: Registry, settings: Mapping[str, Any] | None) -> Flat:
    """Flatten with promoted values checked like node values, blamed on the instance."""
    def check_value(node: Node, inp: Input, issues: list[ValidationIssue]) -> tuple[bool, Any]:
        probe = NodeSpec(node.type, _no_fn, (inp,))
        return _check_constant(node, probe, inp.name, issues, settings)

    return flatten(graph, registry, check_value)


def _no_fn(ctx: Any) -> None:  # pragma: no cover - interface probes are never called
    return None


def _instance_targets(flat: Flat, targets: Sequence[str], registry: Registry) -> list[str]:
    """Requested ids as flat node ids: an instance stands for the inner nodes behind its
    outputs and the output nodes inside it."""
    out: list[str] = []
    for t in targets:
        if t not in flat.instances:
            out.append(t)
            continue
        out.extend(src[0] for src in flat.outputs[t].values() if src is not None)
        inner = t + "/"
        for nid, node in flat.graph.nodes.items():
            spec = registry.get(node.type) if nid.startswith(inner) else None
            if spec is not None and spec.output_node:
                out.append(nid)
    return list(dict.fromkeys(out))


def _topological(nodes: list[str], deps: Mapping[str, list[str]]) -> list[str]:
    """Kahn's algorithm, stable with respect to ``nodes`` order."""
    indeg = {n: 0 for n in nodes}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for n in nodes:
        for d in deps.get(n, ()):
            if d in indeg:
                indeg[n] += 1
                children[d].append(n)
    ready = [n for n in reversed(nodes) if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop()
        order.append(n)
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    return order


_SCALARS = (str, int, float, bool, type(None))


def _canonical(value: Any) -> bytes:
    """Stable bytes for hashing.  Flat dicts of scalars (almost every node's
    constants) take a fast path; ``repr`` distinguishes 1 from 1.0 and "1",
    which is right because values are coerced to their declared type first."""
    if type(value) is dict and all(type(v) in _SCALARS for v in value.values()):
        return repr(sorted(value.items())).encode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode()


def validate(graph: Graph, registry: Registry, targets: Sequence[str] | None = None,
             *, scope: str = "needed", settings: Mapping[str, Any] | None = None) -> list[ValidationIssue]:
    """All problems that would stop a run (empty list = runnable)."""
    try:
        build_plan(graph, registry, targets, scope=scope, settings=settings)
    except WorkflowInvalid as exc:
        return exc.issues
    return []
