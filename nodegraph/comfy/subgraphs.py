"""Import ComfyUI's subgraphs (UI format ``definitions.subgraphs``) as nodegraph subgraphs.

ComfyUI's layout (frontend workflow schema, version 1 graphs)::

    "definitions": {"subgraphs": [{
        "id": "<uuid>", "version": 1, "revision": 0, "name": "Text to image", "state": {...},
        "inputNode": {"id": -10, "bounding": [...]}, "outputNode": {"id": -20, "bounding": [...]},
        "inputs":  [{"id": "<uuid>", "name": "text", "type": "STRING", "linkIds": [3, 4]}],
        "outputs": [{"id": "<uuid>", "name": "IMAGE", "type": "IMAGE", "linkIds": [9]}],
        "widgets": [], "nodes": [...], "links": [{"id", "origin_id", "origin_slot", "target_id",
        "target_slot", "type"}], "groups": [...], "definitions": {"subgraphs": [...]}}]}

* a link *from* the input node (``origin_id`` = ``inputNode.id``, slot k) feeds inner nodes
  from interface input k; a link *to* the output node feeds interface output k;
* an instance is an ordinary node whose ``type`` is the definition's UUID; definitions nest
  (an inner node's type is another UUID) and all of them usually sit in the root's
  ``definitions.subgraphs``, though some files nest them inside the definition that uses them;
* promoted widgets: an interface input wired to an inner *widget* shows as a widget on the
  instance, and newer frontends list extra promoted inner widgets in the instance's
  ``properties.proxyWidgets`` (``[[inner_node_id, widget_name], ...]``, sometimes saved as a
  JSON string, sometimes with a middle disambiguator, ``"-1"`` for an interface input,
  ``"a:b"`` for a node inside a nested subgraph).  The instance's ``widgets_values`` hold
  their per-instance values in that order (seed widgets followed by a control value) -- or
  nothing, in the versions where the values lived on the shared inner widgets.

Each definition becomes a :class:`~nodegraph.subgraph.SubgraphDef` whose id is the UUID and
whose instances have type ``subgraph:<uuid>``; promoted widgets become promoted inputs (an
interface input wired to a widget) or per-instance inner values (``"node.input"`` keys, the
same form ``--set outer/inner.input=V`` writes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..graph import Graph
from ..spec import Widget
from ..subgraph import PREFIX, SubgraphDef, SubgraphError, SubgraphInput, SubgraphOutput
from .build import Builder
from .widgets import control_word

_WIDGETS = {"INT": Widget.INT, "FLOAT": Widget.FLOAT, "STRING": Widget.STRING, "COMBO": Widget.STRING,
            "BOOLEAN": Widget.BOOL}


@dataclass
class Interface:
    """What the importer knows about one definition: our names of its ports (by slot), and
    after its body is imported, the builder that holds it (to translate inner widget names)."""

    uuid: str
    raw: dict[str, Any]
    in_comfy: list[str]
    in_names: list[str]
    out_names: list[str]
    builder: Builder | None = None
    definition: SubgraphDef | None = None
    widget_inputs: set[str] = field(default_factory=set)
    others: dict[str, Interface] = field(default_factory=dict, repr=False)  # every definition, by UUID


def _seq(value: Any) -> list[Any]:
    """A list from the file, or nothing: a malformed field never stops the import."""
    return value if isinstance(value, list) else []


def _ident(name: Any, taken: set[str], fallback: str) -> str:
    """An identifier for a ComfyUI slot name ("Positive prompt" -> "Positive_prompt"), unique."""
    base = re.sub(r"\W", "_", str(name or "")).strip("_") or fallback
    if base[0].isdigit():
        base = "_" + base
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def _port_type(t: Any) -> str:
    if isinstance(t, list) or t == "COMBO":
        return "STRING"
    return t if isinstance(t, str) and t else "*"


def _collect(doc: dict[str, Any], b: Builder) -> dict[str, dict[str, Any]]:
    """Every definition, wherever it is nested (iteratively; the first of a UUID wins)."""
    found: dict[str, dict[str, Any]] = {}
    stack = [doc]
    while stack:
        d = stack.pop()
        defs = d.get("definitions")
        subs = defs.get("subgraphs") if isinstance(defs, dict) else None
        if subs is None:
            continue
        if not isinstance(subs, list):
            b.warn("'definitions.subgraphs' is not a list; subgraphs ignored")
            continue
        for i, sub in enumerate(subs):
            if not (isinstance(sub, dict) and isinstance(sub.get("id"), str) and isinstance(sub.get("nodes"), list)):
                b.warn(f"subgraph definition #{i} has no 'id' or 'nodes'; ignored")
                continue
            if sub["id"] not in found:
                found[sub["id"]] = sub
                stack.append(sub)
    return found


def _interface(uuid: str, raw: dict[str, Any]) -> Interface:
    ins = [p for p in _seq(raw.get("inputs")) if isinstance(p, dict)]
    outs = [p for p in _seq(raw.get("outputs")) if isinstance(p, dict)]
    taken: set[str] = set()
    in_names = [_ident(p.get("name"), taken, f"input_{k}") for k, p in enumerate(ins)]
    taken = set()
    out_names = [_ident(p.get("name"), taken, f"output_{k}") for k, p in enumerate(outs)]
    return Interface(uuid, raw, [str(p.get("name")) for p in ins], in_names, out_names)


def import_subgraphs(doc: dict[str, Any], b: Builder) -> dict[str, Interface]:
    """Import every definition of ``doc`` into ``b.graph.subgraphs``; returns them by UUID
    (the node types that are instances)."""
    raw = _collect(doc, b)
    interfaces = {uuid: _interface(uuid, d) for uuid, d in raw.items()}
    for iface in interfaces.values():
        iface.others = interfaces
    for uuid in _dependency_order(interfaces, b):  # nested definitions first: instances need them
        _import_definition(interfaces[uuid], interfaces, b)
    return interfaces


def _dependency_order(interfaces: dict[str, Interface], b: Builder) -> list[str]:
    """UUIDs so that a definition comes after every definition it instantiates (Kahn)."""
    deps = {u: {str(n.get("type")) for n in i.raw["nodes"] if isinstance(n, dict)} & set(interfaces) - {u}
            for u, i in interfaces.items()}
    order: list[str] = []
    ready = [u for u, d in deps.items() if not d]
    users: dict[str, list[str]] = {u: [] for u in interfaces}
    for u, d in deps.items():
        for dep in d:
            users[dep].append(u)
    left = {u: len(d) for u, d in deps.items()}
    while ready:
        u = ready.pop()
        order.append(u)
        for user in users[u]:
            left[user] -= 1
            if left[user] == 0:
                ready.append(user)
    rest = [u for u in interfaces if u not in order]
    if rest:
        b.warn(f"subgraphs {rest} contain each other; they will not validate")
    return order + rest


def _import_definition(iface: Interface, interfaces: dict[str, Interface], b: Builder) -> None:
    from .result import ComfyFormatError
    from .ui_format import _input_name, _links, import_graph

    raw = iface.raw
    name = str(raw.get("name") or iface.uuid)
    in_node, out_node = _io_id(raw.get("inputNode"), "-10"), _io_id(raw.get("outputNode"), "-20")
    try:
        links = _links(raw)
    except ComfyFormatError as exc:
        b.warn(f"subgraph {name!r}: {exc}; its links were dropped")
        links = {}
    inner_links = [[lid, s, ss, d, ds] for lid, (s, ss, d, ds) in links.items() if in_node not in (s, d)
                   and out_node not in (s, d)]
    inner = Builder("comfy_ui", b.table)
    body = {"nodes": raw["nodes"], "links": inner_links, "groups": raw.get("groups")}
    try:
        import_graph(body, inner, interfaces)
    except ComfyFormatError as exc:
        b.warn(f"subgraph {name!r} cannot be read ({exc}); its instances stay unknown")
        return
    inner.finish()
    iface.builder = inner
    for w in inner.result.warnings:
        b.warn(f"subgraph {name!r}: {w}")
    b.result.unmapped.extend((f"{name}/{nid}", cls) for nid, cls in inner.result.unmapped)
    by_id = {str(n["id"]): n for n in raw["nodes"] if isinstance(n, dict) and "id" in n}
    inputs = _inputs(iface, links, in_node, by_id, inner, b, name, _input_name)
    outputs = _outputs(iface, links, in_node, out_node, inner, b, name)
    inputs = _implicit_inputs_cross(inner.graph, inputs, b.table.implicit_inputs)
    defn = SubgraphDef(iface.uuid, inner.graph, tuple(inputs), tuple(outputs), name=name,
                       description=str(raw.get("description") or ""),
                       category="subgraphs/" + str(raw["category"]) if isinstance(raw.get("category"), str)
                       else "subgraphs", extra={"comfy": {"revision": raw.get("revision")}})
    try:
        defn.check()
    except SubgraphError as exc:
        b.warn(f"{exc}; the definition is kept but will not validate")
    iface.definition = defn
    b.graph.set_subgraph(defn)


def _implicit_inputs_cross(graph: Graph, inputs: list[SubgraphInput],
                           implicit: tuple[tuple[str, str, str], ...]) -> list[SubgraphInput]:
    """The packs' implicit inputs (e.g. an empty latent's VAE, see ``ComfyMappings.implicit_inputs``)
    across the boundary: such an unlinked input inside the subgraph gets the subgraph's input of its
    port type, when there is exactly one (the usual "model, clip, vae" interface of a pipeline)."""
    fed = {t for i in inputs for t in i.targets}
    for node_type, input_name, port_type in implicit:
        of_type = [i for i in inputs if i.type == port_type]
        if len(of_type) != 1:
            continue
        extra = tuple((n.id, input_name) for n in graph if n.type == node_type
                      and graph.link_into(n.id, input_name) is None and (n.id, input_name) not in fed)
        if extra:
            inputs = [replace(i, targets=i.targets + extra) if i is of_type[0] else i for i in inputs]
            fed.update(extra)
    return inputs


def _io_id(node: Any, default: str) -> str:
    return str(node.get("id", default)) if isinstance(node, dict) else default


def _inputs(iface: Interface, links: dict[int, tuple[str, int, str, int]], in_node: str,
            by_id: dict[str, dict[str, Any]], inner: Builder, b: Builder, name: str, input_name: Any
            ) -> list[SubgraphInput]:
    raw_ins = [p for p in _seq(iface.raw.get("inputs")) if isinstance(p, dict)]
    out: list[SubgraphInput] = []
    for k, (p, ours) in enumerate(zip(raw_ins, iface.in_names, strict=True)):
        targets: list[tuple[str, str]] = []
        widget_value: Any = None
        widget_targets = 0
        for lid, (src, slot, dst, dslot) in links.items():
            if src != in_node or slot != k or dst not in inner.graph:
                continue
            comfy_name = input_name(by_id.get(dst, {}), dslot, lid)
            target = inner.input_name(dst, comfy_name) if comfy_name is not None else None
            if target is None:
                b.warn(f"subgraph {name!r}: input {p.get('name')!r} feeds an input of node {dst!r} that has no "
                       "equivalent; that connection was dropped")
                continue
            targets.append((dst, target))
            entry = next((e for e in _seq(by_id.get(dst, {}).get("inputs")) if isinstance(e, dict)
                          and (e.get("widget") or {}).get("name") == comfy_name), None)
            if entry is not None:
                widget_targets += 1
                widget_value = inner.graph.node(dst).values.get(target, widget_value)
        t = _port_type(p.get("type"))
        # A promoted widget only when every inner target is a widget (else values could not reach it).
        widget = _WIDGETS.get(str(p.get("type"))) if targets and widget_targets == len(targets) else None
        if widget is None:
            out.append(SubgraphInput(ours, t, tuple(targets), tooltip=str(p.get("label") or "")))
            continue
        iface.widget_inputs.add(iface.in_comfy[k])
        out.append(SubgraphInput(ours, "BOOLEAN" if widget is Widget.BOOL else t,
                                 tuple(targets), widget, _default(widget, widget_value), optional=True,
                                 tooltip=str(p.get("label") or "")))
    return out


def _default(widget: Widget, value: Any) -> Any:
    if widget is Widget.FLOAT and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if widget is Widget.INT and isinstance(value, int) and not isinstance(value, bool):
        return value
    if widget is Widget.STRING and isinstance(value, str):
        return value
    if widget is Widget.BOOL and isinstance(value, bool):
        return value
    return None  # no usable inner value: the inner node keeps its own unless an instance sets one


def _outputs(iface: Interface, links: dict[int, tuple[str, int, str, int]], in_node: str, out_node: str,
             inner: Builder, b: Builder, name: str) -> list[SubgraphOutput]:
    raw_outs = [p for p in _seq(iface.raw.get("outputs")) if isinstance(p, dict)]
    out: list[SubgraphOutput] = []
    for k, (p, ours) in enumerate(zip(raw_outs, iface.out_names, strict=True)):
        source = None
        for src, slot, dst, dslot in links.values():
            if dst != out_node or dslot != k:
                continue
            if src == in_node:
                b.warn(f"subgraph {name!r}: output {p.get('name')!r} is wired straight to an input; not supported, "
                       "left unconnected")
            elif src in inner.graph:
                out_name = inner._output_name(src, slot)
                source = (src, out_name) if out_name is not None else None
        out.append(SubgraphOutput(ours, _port_type(p.get("type")), source))
    return out


# -- instances ----------------------------------------------------------------------------------


def add_instance(b: Builder, nid: str, node: dict[str, Any], iface: Interface, *, mode: str, title: str | None,
                 ui: dict[str, Any]) -> None:
    """A node whose type is a subgraph UUID: an instance, with its promoted widget values."""
    input_names: dict[str, str] = {}
    for k, entry in enumerate(_seq(node.get("inputs"))):
        if not isinstance(entry, dict):
            continue
        widget = entry.get("widget")
        comfy = widget.get("name") if isinstance(widget, dict) and isinstance(widget.get("name"), str) \
            else entry.get("name")
        ours = _our_input(iface, comfy, k)
        if isinstance(comfy, str) and ours is not None:
            input_names[comfy] = ours
    values = _instance_values(b, nid, node, iface)
    b.add_instance(nid, PREFIX + iface.uuid, values, input_names=input_names, output_names=iface.out_names,
                   mode=mode, title=title or (str(iface.raw.get("name")) if iface.raw.get("name") else None), ui=ui)


def _our_input(iface: Interface, comfy: Any, slot: int) -> str | None:
    if comfy in iface.in_comfy:
        return iface.in_names[iface.in_comfy.index(comfy)]
    return iface.in_names[slot] if 0 <= slot < len(iface.in_names) else None


def _proxy_widgets(node: dict[str, Any]) -> list[tuple[str, str]] | None:
    props = node.get("properties")
    proxy = props.get("proxyWidgets") if isinstance(props, dict) else None
    if isinstance(proxy, str):  # serialised as a JSON string by some frontend versions
        try:
            proxy = json.loads(proxy)
        except ValueError:
            return None
    if not isinstance(proxy, list):
        return None
    out = []
    for e in proxy:
        if isinstance(e, list) and len(e) >= 2 and all(isinstance(v, (str, int)) for v in e):
            widget = str(e[-1]).rsplit(": ", 1)[-1]  # "[id, 'id: disambig: name']" in one format
            out.append((str(e[0]), widget))
    return out


def _instance_values(b: Builder, nid: str, node: dict[str, Any], iface: Interface) -> dict[str, Any]:
    proxy = _proxy_widgets(node)
    if proxy is None:
        slots = [("-1", c) for c in _widget_input_names(node) if c in iface.widget_inputs]
    else:
        slots = proxy
    wv = node.get("widgets_values")
    pairs: list[tuple[tuple[str, str], Any]] = []
    if isinstance(wv, dict):
        pairs = [(s, wv[s[1]]) for s in slots if s[1] in wv]
    elif isinstance(wv, list) and wv:
        extra = len(wv) - len(slots)
        i = 0
        for s in slots:
            if i >= len(wv):
                break
            pairs.append((s, wv[i]))
            i += 1
            if extra > 0 and i < len(wv) and control_word(wv[i]) is not None:
                i, extra = i + 1, extra - 1  # a promoted seed's control_after_generate
        if i != len(wv) or len(wv) < len(slots):
            b.warn(f"node {nid!r} (subgraph {iface.raw.get('name')!r}): {len(wv)} widget value(s) for "
                   f"{len(slots)} promoted widget(s); the unmatched ones were ignored")
    values: dict[str, Any] = {}
    for (src, widget), value in pairs:
        key, converted = _promoted_key(iface, src, widget, value)
        if key is None:
            b.warn(f"node {nid!r}: promoted widget {widget!r} of inner node {src!r} was not found; ignored")
            continue
        values[key] = converted
    return values


def _widget_input_names(node: dict[str, Any]) -> list[str]:
    out = []
    for e in _seq(node.get("inputs")):
        w = e.get("widget") if isinstance(e, dict) else None
        if isinstance(w, dict) and isinstance(w.get("name"), str):
            out.append(w["name"])
    return out


def _promoted_key(iface: Interface, src: str, widget: str, value: Any) -> tuple[str | None, Any]:
    """Our value key for a promoted widget: an interface input name, or ``"a/b.input"`` for an
    inner widget (``src`` "a:b" walks into nested subgraphs); the value converted like the
    inner node's own (file names, sampler names)."""
    if src == "-1":
        if widget not in iface.in_comfy or iface.builder is None:
            return None, value
        ours = iface.in_names[iface.in_comfy.index(widget)]
        first = next(iter(_targets_of(iface, ours)), None)  # convert as the first inner target would
        return ours, (_convert(iface.builder, first[0], first[1], value) if first is not None else value)
    path = src.split(":")
    current = iface
    for hop in path[:-1]:
        if current.builder is None or hop not in current.builder.graph:
            return None, value
        t = current.builder.graph.node(hop).type
        nxt = _interface_of(current, t)
        if nxt is None:
            return None, value
        current = nxt
    last = path[-1]
    if current.builder is None or last not in current.builder.graph:
        return None, value
    ours = current.builder.input_name(last, widget)
    if ours is None:
        return None, value
    return "/".join(path) + "." + ours, _convert_comfy(current.builder, last, widget, value)


def _targets_of(iface: Interface, ours: str) -> list[tuple[str, str]]:
    i = iface.definition.input(ours) if iface.definition is not None else None
    return list(i.targets) if i is not None else []


def _interface_of(current: Interface, node_type: str) -> Interface | None:
    return current.others.get(node_type[len(PREFIX):]) if node_type.startswith(PREFIX) else None


def _convert(builder: Builder, nid: str, our_input: str, value: Any) -> Any:
    nmap = builder.map_of(nid)
    p = nmap.param_for_ours(our_input) if nmap is not None else None
    return p.to_ours(value)[0] if p is not None else value


def _convert_comfy(builder: Builder, nid: str, comfy_input: str, value: Any) -> Any:
    nmap = builder.map_of(nid)
    p = nmap.param(comfy_input) if nmap is not None else None
    return p.to_ours(value)[0] if p is not None else value
