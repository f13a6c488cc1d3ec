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
from .spec import coerce_value, expected_value, explain_value_error


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
