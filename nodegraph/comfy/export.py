"""Export our graph to ComfyUI's API format (the JSON its ``/prompt`` endpoint runs).

The API format has no modes, reroutes or frontend values, so, as ComfyUI's own
editor does when it queues a prompt:

* muted nodes are left out (inputs they fed are left out too);
* bypassed nodes are left out and their consumers read what the bypassed
  node would have passed through (its first linked input of the output's type);
* reroutes are followed to their source;
* constant primitive nodes without a ComfyUI class (our Seed node) are folded
  into the widgets they feed; int/float/text/bool export as ComfyUI's
  Primitive* nodes.

A node that has no ComfyUI equivalent makes the export fail with a
:class:`ComfyExportError` listing *all* such nodes.  Placeholders imported
from an API prompt export back as the ComfyUI class they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import NodegraphError
from ..graph import Graph, Node
from ..plan import unknown_pass_through, with_specs
from ..registry import Registry
from ..subgraph import SEP, flatten, has_instances
from .mapping import BY_OURS, PLACEHOLDER_PREFIX, REROUTE_TYPE, NodeMap

_PRIMITIVES = frozenset({"primitives.int", "primitives.float", "primitives.string", "primitives.bool",
                         "primitives.seed"})

Source = tuple[str, str]


class ComfyExportError(NodegraphError):
    """Some nodes have no ComfyUI equivalent; ``nodes`` lists ``(node id, node type)``."""

    def __init__(self, nodes: list[tuple[str, str]]) -> None:
        self.nodes = nodes
        listed = ", ".join(f"{nid!r} ({t})" for nid, t in nodes)
        super().__init__(f"{len(nodes)} node(s) have no ComfyUI equivalent: {listed}")


@dataclass
class ExportResult:
    prompt: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _constant_primitive(graph: Graph, registry: Registry, node: Node) -> tuple[bool, Any]:
    """(True, value) for a primitive node whose output is a constant."""
    if node.type not in _PRIMITIVES or node.type in BY_OURS or graph.inputs_view(node.id):
        return False, None
    spec = registry.get(node.type)
    if spec is None or not spec.inputs:
        return False, None
    inp = spec.inputs[0]
    return True, node.values.get(inp.name, inp.default)


def _resolve(graph: Graph, registry: Registry, src: Source) -> Source | None:
    """The exported output that really feeds a link: through reroutes and bypassed nodes.
    ``None`` when it comes from a muted node or a bypassed node with nothing to pass through."""
    seen: set[str] = set()
    nid, out = src
    while True:
        node = graph.nodes.get(nid)
        if node is None or node.mode == "mute" or nid in seen:
            return None
        seen.add(nid)
        if node.type == REROUTE_TYPE:
            link = graph.link_into(nid, "input")
            if link is None:
                return None
            nid, out = link.src, link.src_output
            continue
        if node.mode != "bypass":
            return nid, out
        spec = registry.get(node.type)
        links = graph.inputs_view(nid)
        if spec is None:  # a bypassed placeholder: the same pass-through the planner uses
            name = unknown_pass_through(graph, registry, node, out, None)
            if name is None:
                return None
            nid, out = links[name].src, links[name].src_output
            continue
        o = spec.output(out)
        if o is None:
            return None
        chosen = next((i for i in spec.inputs if i.name in links and i.type == o.type), None)
        if chosen is None:
            return None
        nid, out = links[chosen.name].src, links[chosen.name].src_output


def _output_slot(graph: Graph, src: Source) -> int | None:
    node = graph.nodes[src[0]]
    nmap = BY_OURS.get(node.type)
    if nmap is not None:
        return nmap.outputs.index(src[1]) if src[1] in nmap.outputs else None
    if src[1].isdigit():
        return int(src[1])
    outs = (node.extra.get("comfy") or {}).get("outputs") or []
    names = [o.get("name") for o in outs if isinstance(o, dict)]
    return names.index(src[1]) if src[1] in names else None


def _exportable_placeholder(node: Node) -> bool:
    comfy = node.extra.get("comfy")
    return (node.type.startswith(PLACEHOLDER_PREFIX) and isinstance(comfy, dict)
            and isinstance(comfy.get("class_type"), str) and isinstance(comfy.get("inputs"), dict))


def export_comfy_api(graph: Graph, registry: Registry) -> ExportResult:
    """Our graph as a ComfyUI API prompt, with warnings for settings ComfyUI cannot express.

    Subgraphs are flattened first, as ComfyUI's editor does when it queues a prompt; inner
    nodes get ComfyUI's path ids (``"12:5"`` for node 5 inside instance 12)."""
    if has_instances(graph):
        flat = flatten(graph, registry)
        graph, registry = flat.graph, with_specs(registry, flat.specs)  # bypassed instances pass through
    result = ExportResult({})
    constants: dict[str, Any] = {}
    exported: list[Node] = []
    bad: list[tuple[str, str]] = []
    for node in graph:
        if node.mode != "normal" or node.type == REROUTE_TYPE:
            continue
        is_const, value = _constant_primitive(graph, registry, node)
        if is_const:
            constants[node.id] = value
        elif node.type in BY_OURS or _exportable_placeholder(node):
            exported.append(node)
        else:
            bad.append((node.id, node.type))
    if bad:
        raise ComfyExportError(bad)
    exported_ids = {n.id for n in exported}

    def linked_value(dst: str, name: str) -> tuple[bool, Any]:
        """(present, value) of a linked input: ``[src, slot]``, a folded constant, or absent."""
        link = graph.link_into(dst, name)
        if link is None:
            return False, None
        src = _resolve(graph, registry, (link.src, link.src_output))
        if src is None:
            return False, None
        if src[0] in constants:
            return True, ("const", constants[src[0]])
        if src[0] not in exported_ids:
            return False, None
        slot = _output_slot(graph, src)
        if slot is None:
            result.warnings.append(f"node {dst!r} input {name!r}: output {src[1]!r} of {src[0]!r} has no "
                                   "ComfyUI slot; link left out")
            return False, None
        return True, [_api_id(src[0]), slot]

    for node in exported:
        nmap = BY_OURS.get(node.type)
        if nmap is None:
            inputs = _placeholder_inputs(graph, node, linked_value)
            class_type = node.extra["comfy"]["class_type"]
        else:
            inputs = _mapped_inputs(graph, registry, node, nmap, linked_value, result.warnings)
            class_type = nmap.comfy
        spec = registry.get(node.type)
        title = node.title or (spec.display_name if spec is not None else class_type)
        result.prompt[_api_id(node.id)] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
    return result


def _api_id(nid: str) -> str:
    return nid.replace(SEP, ":")


def _unwrap(value: Any) -> Any:
    return value[1] if isinstance(value, tuple) and value and value[0] == "const" else value


def _mapped_inputs(graph: Graph, registry: Registry, node: Node, nmap: NodeMap, linked_value: Any,
                   warnings: list[str]) -> dict[str, Any]:
    spec = registry.get(node.type)
    inputs: dict[str, Any] = {}
    for p in nmap.params:
        if p.drop:
            if p.comfy_default is not None:
                inputs[p.comfy] = p.comfy_default
            continue
        present, value = linked_value(node.id, p.name)
        if present:
            inputs[p.comfy] = p.to_comfy(_unwrap(value)) if isinstance(value, tuple) else value
            continue
        if not p.widget:
            continue
        inp = spec.input(p.name) if spec is not None else None
        value = node.values.get(p.name, inp.default if inp is not None else None)
        if value is not None:
            inputs[p.comfy] = p.to_comfy(value)
    if spec is not None:
        mapped = {p.name for p in nmap.params if not p.drop}
        for inp in spec.inputs:
            if inp.name in mapped or not inp.has_widget:
                continue
            value = node.values.get(inp.name, inp.default)
            if value != inp.default:
                warnings.append(f"node {node.id!r} ({node.type}): {inp.name}={value!r} has no ComfyUI "
                                f"equivalent; ComfyUI will use its own behaviour")
    return inputs


def _placeholder_inputs(graph: Graph, node: Node, linked_value: Any) -> dict[str, Any]:
    original: dict[str, Any] = node.extra["comfy"]["inputs"]
    inputs: dict[str, Any] = {}
    for name in original:
        present, value = linked_value(node.id, name)
        if present:
            inputs[name] = _unwrap(value)
        elif name in node.values:
            inputs[name] = node.values[name]
    for name, value in node.values.items():
        inputs.setdefault(name, value)
    return inputs


def to_comfy_api(graph: Graph, registry: Registry) -> dict[str, Any]:
    """Our graph as a ComfyUI API prompt (``{id: {"class_type", "inputs", "_meta"}}``).

    Raises :class:`ComfyExportError` naming every node without a ComfyUI equivalent."""
    return export_comfy_api(graph, registry).prompt
