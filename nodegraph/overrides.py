"""``NODE.INPUT=VALUE`` overrides (``nodegraph run --set``, the Python API, batch sweeps).

Values are parsed by the input's declared widget (``--set sampler.steps=abc``
fails here, naming the node and input, before any work starts) and written
into a copy of the graph's values, so the workflow file itself is untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import OverrideError
from .graph import Graph
from .registry import Registry
from .spec import Input, coerce_value, expected_value, explain_value_error
from .subgraph import SEP, inner_node, is_instance, lookup


def parse_assignment(text: str) -> tuple[str, str, str]:
    """``"7.seed=5"`` → ``("7", "seed", "5")``.  Node ids may contain dots; the
    input name is whatever follows the last dot before ``=``."""
    target, sep, value = text.partition("=")
    node_id, dot, name = target.strip().rpartition(".")
    if not sep or not dot or not node_id or not name:
        lacks = ("no '=VALUE'" if not sep else "no node id before the dot" if not dot or not node_id
                 else "no input name after the dot")
        raise OverrideError(f"override {text!r} must look like NODE.INPUT=VALUE ({lacks}) -> e.g. "
                            "sampler.seed=42; quote values with spaces: 'positive.text=a red star'")
    return node_id, name, value


def apply_overrides(graph: Graph, registry: Registry, overrides: Mapping[str, Any] | Iterable[str]) -> None:
    """Set values in ``graph``.  Accepts ``{"node.input": value}`` or ``["node.input=value", ...]``.

    String values are converted by the input's widget type; other values are
    checked the same way.  Every problem is collected and raised together, and
    then nothing is applied (a half-applied sweep would run the wrong thing).
    """
    items: list[tuple[str, str, Any]] = []
    problems: list[str] = []
    accepted: list[tuple[str, str, Any]] = []
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            node_id, dot, name = str(key).rpartition(".")
            if not dot or not node_id or not name:
                problems.append(f"override key {key!r} must look like NODE.INPUT")
                continue
            items.append((node_id, name, value))
    else:
        for text in overrides:
            try:
                items.append(parse_assignment(text))
            except OverrideError as exc:
                problems.append(str(exc))
    for node_id, name, value in items:
        if SEP in node_id or is_instance(getattr(graph.nodes.get(node_id), "type", "")):
            problem, target = _subgraph_override(graph, registry, node_id, name, value)
            if problem:
                problems.append(problem)
            elif target is not None:
                accepted.append(target)
            continue
        node = graph.nodes.get(node_id)
        if node is None:
            ids = ", ".join(sorted(graph.nodes)[:30])
            problems.append(f"no node {node_id!r} in this workflow (node ids: {ids}) -> use one of these ids "
                            "before the dot")
            continue
        spec = registry.get(node.type)
        if spec is None:
            problems.append(f"node {node_id!r}: unknown node type {node.type!r} -> install the node pack that "
                            "provides it, or delete the node")
            continue
        inp = spec.input(name)
        if inp is None or not inp.has_widget:
            names = ", ".join(i.name for i in spec.inputs if i.has_widget) or "none"
            problems.append(f"node {node_id!r} ({node.type}) has no settable input {name!r} "
                            f"(settable inputs: {names})")
            continue
        link = graph.link_into(node_id, name)
        if link is not None:  # the link wins over a typed-in value: the override would do nothing
            problems.append(f"node {node_id!r} ({node.type}) input {name!r} is fed by a link from node "
                            f"{link.src!r}; override that node's value instead (or remove the link)")
            continue
        try:
            coerced = coerce_value(inp, value)
        except (TypeError, ValueError) as exc:
            example = f", e.g. {node_id}.{name}={inp.default}" if inp.default is not None else ""
            problems.append(f"node {node_id!r} ({node.type}) input {name!r}: cannot use {value!r}: "
                            f"{explain_value_error(value, exc)} -> give {expected_value(inp)}{example}")
            continue
        accepted.append((node_id, name, coerced))
    if problems:
        raise OverrideError("invalid override(s):\n" + "\n".join(f"  - {p}" for p in problems))
    for node_id, name, coerced in accepted:
        graph.set_value(node_id, name, coerced)


def _subgraph_override(graph: Graph, registry: Registry, path: str, name: str, value: Any
                       ) -> tuple[str | None, tuple[str, str, Any] | None]:
    """An override of a subgraph instance's promoted input (``outer.denoise``) or of a node
    inside one (``outer/inner.steps``, any depth).  Inner values are stored on the outermost
    instance (key ``"inner.steps"``), so other instances of the same definition are untouched.
    Returns (problem, (node id, value key, coerced value))."""
    chain, target, defn = inner_node(graph, path, registry)
    if target is None:
        if not chain and path.split(SEP)[0] not in graph.nodes:
            ids = ", ".join(sorted(graph.nodes)[:30])
            return f"no node {path.split(SEP)[0]!r} in this workflow (node ids: {ids})", None
        if defn is None:
            where = chain[-1].id if chain else path.split(SEP)[0]
            return f"node {where!r} is not a subgraph instance with a known definition, so {path!r} names nothing", None
        inner_ids = ", ".join(sorted(defn.graph.nodes)[:30])
        return (f"no node {path!r}: subgraph {defn.id!r} has the inner nodes {inner_ids} -> write "
                f"OUTER/INNER.INPUT=VALUE with one of these", None)
    inp, problem = _settable_input(graph, registry, target, name, defn, path)
    if problem or inp is None:
        return problem, None
    try:
        coerced = coerce_value(inp, value)
    except (TypeError, ValueError) as exc:
        return (f"node {path!r} ({target.type}) input {name!r}: cannot use {value!r}: "
                f"{explain_value_error(value, exc)} -> give {expected_value(inp)}"), None
    if not chain:
        return None, (target.id, name, coerced)
    rest = path.split(SEP, 1)[1]
    return None, (chain[0].id, f"{rest}.{name}", coerced)


def _settable_input(graph: Graph, registry: Registry, target: Any, name: str, defn: Any, path: str
                    ) -> tuple[Input | None, str | None]:
    """The widget input ``name`` of ``target`` (a node, or a subgraph instance's promoted input)."""
    sub = lookup(target.type, graph, registry) if is_instance(target.type) else None
    if sub is not None:
        iface = sub.input(name)
        if iface is None or iface.widget is None:
            names = ", ".join(i.name for i in sub.inputs if i.widget is not None) or "none"
            return None, (f"subgraph node {path!r} ({sub.id}) has no promoted input {name!r} (promoted inputs: "
                          f"{names}); set an inner node with {path}/INNER.INPUT=VALUE")
        inp: Input | None = iface.as_input()
    else:
        spec = registry.get(target.type)
        if spec is None:
            return None, f"node {path!r}: unknown node type {target.type!r} -> install the node pack that provides it"
        inp = spec.input(name)
        if inp is None or not inp.has_widget:
            names = ", ".join(i.name for i in spec.inputs if i.has_widget) or "none"
            return None, f"node {path!r} ({target.type}) has no settable input {name!r} (settable inputs: {names})"
    holder = defn.graph if defn is not None else graph
    link = holder.link_into(target.id, name)
    if link is not None:
        return None, (f"node {path!r} input {name!r} is fed by a link from node {link.src!r}; override that "
                      "node's value instead (or remove the link)")
    return inp, None


def value_key(node_id: str, name: str) -> tuple[str, str]:
    """Where ``apply_overrides`` stores ``node_id.name``: ``("outer", "inner.steps")`` for a node
    inside a subgraph instance (values live on the outermost instance), else unchanged."""
    if SEP not in node_id:
        return node_id, name
    top, rest = node_id.split(SEP, 1)
    return top, f"{rest}.{name}"


def override_input(graph: Graph, registry: Registry, node_id: str, name: str) -> tuple[str | None, Input | None]:
    """(node type, input spec) that ``node_id.name`` addresses, through subgraph instances and
    promoted inputs; ``(None, None)`` when it names nothing."""
    if SEP in node_id:
        _, node, _ = inner_node(graph, node_id, registry)
    else:
        node = graph.nodes.get(node_id)
    if node is None:
        return None, None
    sub = lookup(node.type, graph, registry) if is_instance(node.type) else None
    if sub is not None:
        iface = sub.input(name)
        return node.type, iface.as_input() if iface is not None else None
    spec = registry.get(node.type)
    return node.type, spec.input(name) if spec is not None else None
