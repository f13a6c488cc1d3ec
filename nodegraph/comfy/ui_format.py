"""Import ComfyUI's UI format (the "workflow" the editor saves, with layout).

Structure read here::

    {"nodes": [{"id": 3, "type": "KSampler", "pos": [x, y], "size": [w, h], "mode": 0,
                "title": "...", "color": "#...", "flags": {"collapsed": true},
                "inputs": [{"name": "model", "type": "MODEL", "link": 1},
                           {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 9}],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7]}],
                "widgets_values": [156680208700286, "randomize", 20, 8, "euler", "normal", 1]}],
     "links": [[link_id, from_node, from_slot, to_node, to_slot, "TYPE"], ...],
     "groups": [{"title": "...", "bounding": [x, y, w, h], "color": "#..."}]}

* ``widgets_values`` is positional: values are matched to the class's widget
  inputs in ComfyUI's declaration order (:mod:`.mapping`); the frontend-only
  "control_after_generate" value after a seed goes to ``ui["seed_control"]``.
* a link's target input is found through the target's ``inputs[to_slot]``
  entry (its ``widget`` name for a widget converted to an input).
* ``mode``: 0 always, 2 never (muted), 4 bypass; 1/3 (event triggers) run normally.
* frontend-only nodes: ``Reroute`` becomes ``primitives.reroute``;
  ``PrimitiveNode`` is folded into the widgets it feeds; ``Note`` text is
  kept in ``graph.meta["notes"]``.
* links may also be objects (``{"id", "origin_id", "origin_slot", "target_id", "target_slot"}``,
  the newer frontend's schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .build import Builder
from .mapping import SEED_CONTROLS, NodeMap, mapping_for
from .result import ComfyFormatError, ImportResult
from .subgraphs import add_instance, import_subgraphs
from .widgets import align_widget_values

_MODES = {0: "normal", 1: "normal", 2: "mute", 3: "normal", 4: "bypass"}
_NOTES = ("Note", "MarkdownNote")

LinkTuple = tuple[str, int, str, int]  # from node, from slot, to node, to slot


def _pair(value: Any) -> list[float] | None:
    """``[a, b]`` from a list or LiteGraph's occasional ``{"0": a, "1": b}``."""
    if isinstance(value, dict):
        value = [value.get("0"), value.get("1")]
    if (isinstance(value, (list, tuple)) and len(value) >= 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[:2])):
        return [float(value[0]), float(value[1])]
    return None


def _ui(node: dict[str, Any]) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    for key in ("pos", "size"):
        pair = _pair(node.get(key))
        if pair is not None:
            ui[key] = pair
    for key in ("color", "bgcolor"):
        if isinstance(node.get(key), str):
            ui[key] = node[key]
    flags = node.get("flags")
    if isinstance(flags, dict) and flags.get("collapsed"):
        ui["collapsed"] = True
    return ui


def _links(doc: dict[str, Any]) -> dict[int, LinkTuple]:
    raw = doc.get("links") or []
    if not isinstance(raw, list):
        raise ComfyFormatError("'links' must be a list")
    out: dict[int, LinkTuple] = {}
    for i, lk in enumerate(raw):
        try:
            if isinstance(lk, dict):
                lid, src, sslot, dst, dslot = (lk["id"], lk["origin_id"], lk["origin_slot"], lk["target_id"],
                                               lk["target_slot"])
            else:
                lid, src, sslot, dst, dslot = lk[0], lk[1], lk[2], lk[3], lk[4]
            out[int(lid)] = (str(src), int(sslot), str(dst), int(dslot))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ComfyFormatError(f"link #{i} must be [id, from_node, from_slot, to_node, to_slot, type]") from None
    return out


def _input_name(node: dict[str, Any], slot: int, link_id: int) -> str | None:
    """Name of the input that link ``link_id`` enters (by slot, else by the link id it records)."""
    inputs = node.get("inputs") if isinstance(node.get("inputs"), list) else []
    entry = inputs[slot] if 0 <= slot < len(inputs) and isinstance(inputs[slot], dict) else None
    if entry is None or (entry.get("link") is not None and entry.get("link") != link_id):
        entry = next((e for e in inputs if isinstance(e, dict) and e.get("link") == link_id), entry)
    if entry is None:
        return None
    widget = entry.get("widget")
    if isinstance(widget, dict) and isinstance(widget.get("name"), str):
        return widget["name"]
    return entry.get("name") if isinstance(entry.get("name"), str) else None


def _widget_values(nid: str, node: dict[str, Any], nmap: NodeMap,
                   warn: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """ComfyUI widget values by input name, and seed controls by input name."""
    wv = node.get("widgets_values")
    if wv is None:
        return {}, {}
    if isinstance(wv, dict):  # some frontends save widgets by name
        controls = {k: v for k, v in wv.items() if k == "control_after_generate"}
        values = {k: v for k, v in wv.items() if k not in controls}
        seeds = [p.comfy for p in nmap.widgets if p.seed]
        return values, ({seeds[0]: controls["control_after_generate"]} if seeds and controls else {})
    if not isinstance(wv, list):
        warn(f"node {nid!r} ({nmap.comfy}): unreadable widgets_values {wv!r}; defaults used")
        return {}, {}
    values, controls, extra = align_widget_values(nmap, wv)  # by the widget specs, see .widgets
    if extra > 0:
        warn(f"node {nid!r} ({nmap.comfy}): {extra} widget value(s) more than expected were ignored")
    return values, controls


def import_ui(doc: dict[str, Any]) -> ImportResult:
    """Build a graph from a UI-format workflow document."""
    b = Builder("comfy_ui")
    subgraphs = import_subgraphs(doc, b)  # definitions.subgraphs -> our subgraph definitions (.subgraphs)
    import_graph(doc, b, subgraphs)
    return b.finish()


def import_graph(doc: dict[str, Any], b: Builder, subgraphs: Mapping[str, Any]) -> None:
    """Nodes, links and groups of one graph (the workflow, or a subgraph definition's body)
    into ``b``; nodes whose type is a key of ``subgraphs`` become subgraph instances."""
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and "id" in n and "type" in n for n in nodes):
        raise ComfyFormatError("not a ComfyUI workflow: 'nodes' must be a list of objects with 'id' and 'type'")
    links = _links(doc)
    by_id: dict[str, dict[str, Any]] = {}
    for n in nodes:
        nid = str(n["id"])
        if nid in by_id:
            raise ComfyFormatError(f"two nodes have the id {nid}")
        by_id[nid] = n
    primitives: dict[str, dict[str, Any]] = {}
    for n in nodes:
        nid, cls = str(n["id"]), str(n["type"])
        mode = _MODES.get(n.get("mode", 0), "normal")
        if n.get("mode", 0) not in _MODES:
            b.warn(f"node {nid!r} ({cls}): unknown mode {n.get('mode')!r}; treated as normal")
        title = n["title"] if isinstance(n.get("title"), str) else None
        ui = _ui(n)
        if cls == "PrimitiveNode":
            primitives[nid] = n
            continue
        if cls in _NOTES:  # canvas comments: kept in meta["notes"] with their place on the canvas
            wv = n.get("widgets_values") or [""]
            text = wv[0] if isinstance(wv, list) and wv else wv.get("text", "") if isinstance(wv, dict) else ""
            b.graph.meta.setdefault("notes", []).append({"id": nid, "title": title or cls, "text": str(text),
                                                         "markdown": cls == "MarkdownNote", **ui})
            continue
        nmap = mapping_for(cls)
        if cls in subgraphs:
            add_instance(b, nid, n, subgraphs[cls], mode=mode, title=title, ui=ui)
        elif cls == "Reroute":
            b.add_reroute(nid, mode=mode, title=title, ui=ui)
        elif nmap is not None:
            values, controls = _widget_values(nid, n, nmap, b.warn)
            b.add_mapped(nid, nmap, values, mode=mode, title=title, ui=ui, seed_controls=controls)
        else:
            outs = [o.get("name") if isinstance(o, dict) else None for o in (n.get("outputs") or [])]
            names = [str(o) if o else str(k) for k, o in enumerate(outs)]
            if len(set(names)) != len(names):
                names = [str(k) for k in range(len(names))]
            b.add_placeholder(nid, cls, {}, dict(n), output_names=names, mode=mode, title=title, ui=ui)

    for lid, (src, slot, dst, dslot) in links.items():
        target = by_id.get(dst)
        if dst in primitives or (target is not None and str(target["type"]) in _NOTES):
            continue
        name = _input_name(target, dslot, lid) if target is not None else None
        if src in primitives:
            if name is not None and dst in b.graph:
                _fold_primitive(b, primitives[src], dst, name)
            continue
        if target is not None and name is None:
            b.warn(f"link {lid} enters node {dst!r} at input #{dslot}, which the node does not list; dropped")
            continue
        b.link(src, slot, dst, name or str(dslot))
    for pid in primitives:
        if not any(src == pid for src, _, _, _ in links.values()):
            b.warn(f"unconnected primitive node {pid!r} dropped (it only feeds widgets in ComfyUI)")

    _groups(b, doc.get("groups"))


def _fold_primitive(b: Builder, prim: dict[str, Any], dst: str, comfy_input: str) -> None:
    """A PrimitiveNode only exists in ComfyUI's editor: it sets the widget it is wired to.  Write its
    value (and seed control) into that widget of ``dst``."""
    wv = prim.get("widgets_values") or []
    if not isinstance(wv, list) or not wv:
        return
    value = wv[0]
    control = wv[1] if len(wv) > 1 and wv[1] in SEED_CONTROLS else None
    node = b.graph.node(dst)
    nmap = b.map_of(dst)
    if nmap is None:  # a placeholder (ComfyUI's name) or a subgraph instance (its interface name)
        b.graph.set_value(dst, b.input_name(dst, comfy_input) or comfy_input, value)
        return
    p = nmap.param(comfy_input)
    if p is None or p.drop or not p.widget:
        b.warn(f"node {dst!r} ({nmap.comfy}): primitive value for {comfy_input!r} has no equivalent; ignored")
        return
    converted, warning = p.to_ours(value)
    if warning:
        b.warn(f"node {dst!r} ({nmap.comfy}): {warning}")
    b.graph.set_value(dst, p.name, converted)
    if control is not None and p.seed:
        node.ui.setdefault("seed_control", {})[p.name] = control


def _groups(b: Builder, groups: Any) -> None:
    if not isinstance(groups, list):
        return
    for i, g in enumerate(groups):
        if not isinstance(g, dict):
            continue
        box = g.get("bounding")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            b.warn(f"group #{i} ({g.get('title', '')!r}) has no valid 'bounding'; dropped")
            continue
        gid = f"g{g.get('id', i + 1)}"
        while gid in b.graph.groups:
            gid += "_"
        b.graph.add_group(str(g.get("title", "Group")), tuple(float(v) for v in box),
                          g.get("color") if isinstance(g.get("color"), str) else None, id=gid)
