"""Workflow files: versioned JSON ⇄ :class:`~nodegraph.graph.Graph`.

Format (version 1)::

    {
      "format": "nodegraph.workflow",
      "version": 1,
      "meta": {"name": "...", "description": "..."},
      "nodes": {
        "sampler": {"type": "diffusion.sampler", "values": {"seed": 5, "steps": 10},
                    "mode": "normal", "title": "KSampler",
                    "ui": {"pos": [400, 120], "size": [260, 300], "collapsed": false}}
      },
      "links": [{"from": ["ckpt", "MODEL"], "to": ["sampler", "model"]}],
      "groups": [{"id": "g1", "title": "Load", "bounds": [0, 0, 500, 300], "color": "#335"}]
    }

Design choices and why:

* values are keyed by input name, never by position, so adding an input to a
  node type never shifts the meaning of old files;
* execution semantics (``type``/``values``/``mode``/``links``) and layout
  (``ui``/``groups``/``meta``) live side by side but separately: a file loads
  headless with no Qt, and layout never changes what runs;
* every object keeps fields this version does not understand and writes them
  back unchanged, so files from newer versions or plugins survive a round trip;
* version 2 adds an optional top-level ``subgraphs`` table: reusable components
  (``{id: {"version", "inputs", "outputs", "nodes", "links", …, "history"}}``, see
  :mod:`nodegraph.subgraph`), instantiated by nodes of type ``subgraph:<id>``
  (``subgraph:<id>@<n>`` pins version ``n``).  A graph without subgraphs is still
  written as version 1, so older versions keep reading it;
* ``version`` drives a chain of migrations; version 0 is the compact
  hand-writing form ``{"nodes": {id: {"type": T, "inputs": {name: value |
  [src_id, output]}}}}``, upgraded on load;
* loading never executes anything: it is ``json.loads`` plus structural checks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import WorkflowFileError
from .fileio import atomic_write_text
from .graph import MODES, Graph, GraphError, Link
from .jsontext import DuplicateKeyError, check_size, duplicate_key_message, parse_json
from .spec import Widget
from .subgraph import SubgraphDef, SubgraphError, SubgraphInput, SubgraphOutput, parse_type

FORMAT = "nodegraph.workflow"
SUBGRAPH_FORMAT = "nodegraph.subgraph"
CURRENT_VERSION = 2

_NODE_KEYS = {"type", "values", "mode", "title", "ui"}
_LINK_KEYS = {"from", "to"}
_GROUP_KEYS = {"id", "title", "bounds", "color"}
_TOP_KEYS = {"format", "version", "meta", "nodes", "links", "groups", "subgraphs"}
_SUBGRAPH_KEYS = {"format", "id", "version", "name", "description", "category", "inputs", "outputs", "nodes",
                  "links", "groups", "meta", "history", "subgraphs"}
_PORT_KEYS = {"name", "type", "to", "from", "widget", "default", "min", "max", "step", "choices", "multiline",
              "optional", "tooltip"}
# The fix shown when a file is not a workflow at all: what *can* be opened.
_WHAT_OPENS = ("open a nodegraph workflow (a JSON object with 'nodes' and 'links', see workflows/), "
               "a ComfyUI workflow or API-prompt JSON, or a PNG that embeds one")


def _json_kind(value: Any) -> str:
    """``[1, 2]`` -> "a JSON list": names what a non-object document is, in the user's terms."""
    for kind, name in ((list, "a JSON list"), (str, "a JSON string"), (bool, "a JSON true/false"),
                       (int, "a JSON number"), (float, "a JSON number"), (type(None), "JSON null")):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


# -- migrations ----------------------------------------------------------------------------


def _v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Compact form (links inline as ``[src, output]``) → version 1."""
    if "nodes" not in doc:
        keys = ", ".join(repr(k) for k in list(doc)[:5]) or "none"
        raise WorkflowFileError(f"this JSON is not a workflow: it has no 'nodes' (its keys: {keys}) -> {_WHAT_OPENS}")
    nodes_in = doc.get("nodes")
    if not isinstance(nodes_in, dict):
        raise WorkflowFileError("'nodes' must be an object mapping node ids to nodes")
    nodes: dict[str, Any] = {}
    links_in = doc.get("links", [])
    if not isinstance(links_in, list):
        raise WorkflowFileError("'links' must be a list")
    links: list[dict[str, Any]] = list(links_in)
    for nid, n in nodes_in.items():
        if not isinstance(n, dict):
            raise WorkflowFileError(f"node {nid!r} must be an object")
        n = dict(n)
        inputs = n.pop("inputs", {}) or {}
        if not isinstance(inputs, dict):
            raise WorkflowFileError(f"node {nid!r}: 'inputs' must be an object")
        values = n.pop("values", {}) or {}
        if not isinstance(values, dict):
            raise WorkflowFileError(f"node {nid!r}: 'values' must be an object keyed by input name")
        values = dict(values)
        for name, v in inputs.items():
            if (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int))
                    and isinstance(v[1], (str, int))):
                links.append({"from": [str(v[0]), v[1]], "to": [str(nid), name]})
            else:
                values[name] = v
        n["values"] = values
        nodes[str(nid)] = n
    out = {k: v for k, v in doc.items() if k not in ("nodes", "links")}
    out.update(format=FORMAT, version=1, nodes=nodes, links=links)
    return out


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 2 adds the optional top-level ``subgraphs`` table; a version-1 file is a
    valid version-2 file without it, so nothing changes."""
    return doc


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _v0_to_v1, 1: _v1_to_v2}
"""``MIGRATIONS[n]`` upgrades a version-``n`` document to version ``n + 1``."""


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a parsed document to :data:`CURRENT_VERSION`."""
    if not isinstance(doc, dict):
        raise WorkflowFileError(f"a workflow must be a JSON object, but this file holds {_json_kind(doc)} "
                                f"-> {_WHAT_OPENS}")
    if "format" in doc and doc["format"] != FORMAT:
        raise WorkflowFileError(
            f"not a nodegraph workflow (format {doc['format']!r}); ComfyUI files need the importer"
        )
    version = doc.get("version", 0 if "format" not in doc else None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise WorkflowFileError(f"'version' must be a non-negative integer, got {version!r}")
    if version > CURRENT_VERSION:
        raise WorkflowFileError(
            f"written by a newer nodegraph (format version {version}); this one reads up to "
            f"version {CURRENT_VERSION} — upgrade nodegraph to open it"
        )
    while version < CURRENT_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["version"] = version
    return doc


# -- document ⇄ graph -----------------------------------------------------------------------


def from_dict(doc: dict[str, Any]) -> Graph:
    """Build a graph from a parsed workflow document (any supported version)."""
    try:
        return _graph_from_doc(doc)
    except GraphError as exc:  # e.g. two groups with one id: a file problem, not a crash
        raise WorkflowFileError(str(exc)) from None


def _graph_from_doc(doc: dict[str, Any]) -> Graph:
    doc = migrate(doc)
    g = _build_graph(doc, _TOP_KEYS)
    for definition in subgraphs_from_dict(doc.get("subgraphs", {})):
        g.subgraphs[definition.id] = definition
    return g


def _build_graph(doc: dict[str, Any], known_keys: set[str], where: str = "") -> Graph:
    """Nodes, links, groups and meta of a workflow or of a subgraph definition's body."""
    try:
        return _build_graph_body(doc, known_keys)
    except WorkflowFileError as exc:
        if where:
            raise WorkflowFileError(f"{where}: {exc}") from None
        raise


def _build_graph_body(doc: dict[str, Any], known_keys: set[str]) -> Graph:
    g = Graph()
    nodes = doc.get("nodes", {})
    if not isinstance(nodes, dict):
        raise WorkflowFileError("'nodes' must be an object mapping node ids to nodes")
    for nid, n in nodes.items():
        if not isinstance(n, dict):
            raise WorkflowFileError(f"node {nid!r} must be an object")
        t = n.get("type")
        if not isinstance(t, str) or not t:
            raise WorkflowFileError(f"node {nid!r} has no 'type'")
        values = n.get("values", {})
        if not isinstance(values, dict):
            raise WorkflowFileError(f"node {nid!r}: 'values' must be an object keyed by input name")
        mode = n.get("mode", "normal")
        if mode not in MODES:
            raise WorkflowFileError(f"node {nid!r}: 'mode' must be one of {list(MODES)}, not {mode!r}")
        title = n.get("title")
        if title is not None and not isinstance(title, str):
            raise WorkflowFileError(f"node {nid!r}: 'title' must be text")
        ui = n.get("ui", {})
        if not isinstance(ui, dict):
            raise WorkflowFileError(f"node {nid!r}: 'ui' must be an object")
        ui = _finite_layout(ui)
        extra = {k: v for k, v in n.items() if k not in _NODE_KEYS}
        g.add_node(t, values, id=str(nid), mode=mode, title=title, ui=ui, extra=extra)

    links = doc.get("links", [])
    if not isinstance(links, list):
        raise WorkflowFileError("'links' must be a list")
    dangling: list[Link] = []
    for i, lk in enumerate(links):
        try:
            (src, out), (dst, inp) = lk["from"], lk["to"]
        except (TypeError, KeyError, ValueError):
            raise WorkflowFileError(
                f"link #{i} must look like {{'from': [node_id, output], 'to': [node_id, input]}}"
            ) from None
        src, dst, out, inp = str(src), str(dst), str(out), str(inp)
        extra = {k: v for k, v in lk.items() if k not in _LINK_KEYS}
        if src not in g.nodes or dst not in g.nodes:
            # Keep it: the validator reports it, and saving writes it back untouched.
            dangling.append(Link(src, out, dst, inp, extra))
            continue
        if g.link_into(dst, inp) is not None:
            raise WorkflowFileError(f"node {dst!r}: input {inp!r} is fed by more than one link")
        g.connect(src, out, dst, inp, extra=extra)
    g.dangling_links = dangling

    groups = doc.get("groups", [])
    if not isinstance(groups, list):
        raise WorkflowFileError("'groups' must be a list")
    for i, gr in enumerate(groups):
        if not isinstance(gr, dict):
            raise WorkflowFileError(f"group #{i} must be an object")
        bounds = gr.get("bounds", [0, 0, 400, 300])
        if not (isinstance(bounds, list) and len(bounds) == 4 and all(_is_finite_number(b) for b in bounds)):
            raise WorkflowFileError(f"group #{i}: 'bounds' must be [x, y, width, height]")
        g.add_group(str(gr.get("title", "Group")), tuple(bounds), gr.get("color"),
                    id=str(gr["id"]) if "id" in gr else None,
                    extra={k: v for k, v in gr.items() if k not in _GROUP_KEYS})

    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise WorkflowFileError("'meta' must be an object")
    g.meta.update(meta)
    g.extra = {k: v for k, v in doc.items() if k not in known_keys}
    return g


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_layout(ui: dict[str, Any]) -> dict[str, Any]:
    """``ui`` without a ``pos``/``size`` that is not two finite numbers.  Python's JSON reader accepts
    ``NaN``/``Infinity`` (and huge integers), which would put a node nowhere on the canvas and be
    written back as non-standard JSON; the editor places a node without a position itself."""
    bad = [k for k in ("pos", "size") if k in ui and not (
        isinstance(ui[k], list) and len(ui[k]) == 2 and all(_is_finite_number(v) for v in ui[k])
        and all(abs(v) < 1e15 for v in ui[k]))]
    return {k: v for k, v in ui.items() if k not in bad} if bad else ui


def standard_json(value: Any) -> Any:
    """``value`` with every NaN/Infinity replaced by ``None`` (what JavaScript's JSON.stringify writes, so
    ComfyUI's files do the same), walked iteratively: saved files must be standard JSON that any
    reader, including browsers, can parse."""
    root = [value]
    stack: list[Any] = [root]
    while stack:
        cur = stack.pop()
        items = cur.items() if isinstance(cur, dict) else enumerate(cur)
        for k, v in items:
            if isinstance(v, float) and not math.isfinite(v):
                cur[k] = None
            elif isinstance(v, (dict, list)):
                stack.append(v)
    return root[0]
# -- subgraph definitions ----------------------------------------------------------------------
#
#   "subgraphs": {"hires": {"version": 2, "name": "Hires fix",
#       "inputs": [{"name": "image", "type": "IMAGE", "to": [["up", "image"]]},
#                  {"name": "denoise", "type": "FLOAT", "widget": "FLOAT", "default": 0.5, "min": 0, "max": 1,
#                   "to": [["sampler", "denoise"]]}],
#       "outputs": [{"name": "image", "type": "IMAGE", "from": ["decode", "IMAGE"]}],
#       "nodes": {...}, "links": [...], "groups": [...],
#       "history": {"1": {...an older version, same fields...}}}}


def subgraphs_from_dict(table: Any, where: str = "") -> list[SubgraphDef]:
    """Definitions from a ``subgraphs`` table ``{id: definition}``; errors name the definition."""
    if not isinstance(table, dict):
        raise WorkflowFileError(f"{where}'subgraphs' must be an object mapping subgraph ids to definitions")
    return [subgraph_from_dict(str(sid), body, where=f"{where}subgraph {sid!r}") for sid, body in table.items()]


def subgraph_from_dict(sid: str, body: Any, *, where: str = "", history: bool = True) -> SubgraphDef:
    """One definition (the body of a ``subgraphs`` entry, or a component file)."""
    where = where or f"subgraph {sid!r}"
    if not isinstance(body, dict):
        raise WorkflowFileError(f"{where} must be an object")
    version = body.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WorkflowFileError(f"{where}: 'version' must be a positive integer, got {version!r}")
    graph = _build_graph(body, _SUBGRAPH_KEYS, where)
    older: dict[int, SubgraphDef] = {}
    raw_history = body.get("history", {}) if history else {}
    if not isinstance(raw_history, dict):
        raise WorkflowFileError(f"{where}: 'history' must be an object mapping versions to definitions")
    for ver, old in raw_history.items():
        if not str(ver).isdigit():
            raise WorkflowFileError(f"{where}: history key {ver!r} is not a version number")
        older[int(ver)] = subgraph_from_dict(sid, {**old, "version": int(ver)} if isinstance(old, dict) else old,
                                             where=f"{where} version {ver}", history=False)
    defn = SubgraphDef(
        sid, graph, tuple(_port_in(p, where, i) for i, p in enumerate(_list(body, "inputs", where))),
        tuple(_port_out(p, where, i) for i, p in enumerate(_list(body, "outputs", where))), version,
        _text(body, "name", where), _text(body, "description", where), _text(body, "category", where) or "subgraphs",
        older, {k: v for k, v in body.items() if k not in _SUBGRAPH_KEYS})
    try:
        defn.check()
    except SubgraphError as exc:
        raise WorkflowFileError(str(exc)) from None
    return defn


def _list(body: dict[str, Any], key: str, where: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise WorkflowFileError(f"{where}: {key!r} must be a list")
    return value


def _text(body: dict[str, Any], key: str, where: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise WorkflowFileError(f"{where}: {key!r} must be text")
    return value


def _endpoint(value: Any) -> tuple[str, str] | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (str, int)) for v in value):
        return str(value[0]), str(value[1])
    return None


def _port_in(p: Any, where: str, i: int) -> SubgraphInput:
    if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("type"), str):
        raise WorkflowFileError(f"{where}: input #{i} must be an object with 'name' and 'type'")
    targets = [_endpoint(t) for t in p.get("to", []) or []] if isinstance(p.get("to", []), list) else [None]
    if any(t is None for t in targets):
        raise WorkflowFileError(f"{where}: input {p['name']!r}: 'to' must be a list of [node_id, input]")
    widget = p.get("widget")
    if widget is not None and (not isinstance(widget, str) or widget not in Widget.__members__):
        raise WorkflowFileError(f"{where}: input {p['name']!r}: 'widget' must be one of "
                                f"{', '.join(Widget.__members__)}, not {widget!r}")
    choices = p.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise WorkflowFileError(f"{where}: input {p['name']!r}: 'choices' must be a list of texts")
    bounds = {k: p.get(k) for k in ("min", "max", "step")}
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in bounds.values()):
        raise WorkflowFileError(f"{where}: input {p['name']!r}: min/max/step must be numbers")
    default = p.get("default")
    if widget == "FLOAT" and isinstance(default, int) and not isinstance(default, bool):
        default = float(default)
    return SubgraphInput(p["name"], p["type"], tuple(targets), Widget(widget) if widget else None,  # type: ignore[arg-type]
                         default, bounds["min"], bounds["max"], bounds["step"],
                         tuple(choices) if choices is not None else None, bool(p.get("multiline", False)),
                         bool(p.get("optional", False)), str(p.get("tooltip", "")),
                         {k: v for k, v in p.items() if k not in _PORT_KEYS})


def _port_out(p: Any, where: str, i: int) -> SubgraphOutput:
    if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("type"), str):
        raise WorkflowFileError(f"{where}: output #{i} must be an object with 'name' and 'type'")
    source = _endpoint(p["from"]) if p.get("from") is not None else None
    if p.get("from") is not None and source is None:
        raise WorkflowFileError(f"{where}: output {p['name']!r}: 'from' must be [node_id, output]")
    return SubgraphOutput(p["name"], p["type"], source, {k: v for k, v in p.items() if k not in _PORT_KEYS})


def subgraph_to_dict(defn: SubgraphDef, *, with_history: bool = True) -> dict[str, Any]:
    body = _graph_body(defn.graph)
    d: dict[str, Any] = {"version": defn.version}
    for key in ("name", "description"):
        if getattr(defn, key):
            d[key] = getattr(defn, key)
    if defn.category != "subgraphs":
        d["category"] = defn.category
    d["inputs"] = [_port_in_dict(i) for i in defn.inputs]
    d["outputs"] = [{"name": o.name, "type": o.type, **({"from": list(o.source)} if o.source else {}),
                     **{k: v for k, v in o.extra.items() if k not in _PORT_KEYS}} for o in defn.outputs]
    d.update(body)
    if with_history and defn.history:
        d["history"] = {str(v): subgraph_to_dict(old, with_history=False) for v, old in sorted(defn.history.items())}
    for k, v in defn.extra.items():
        d.setdefault(k, v)
    return d


def _port_in_dict(i: SubgraphInput) -> dict[str, Any]:
    d: dict[str, Any] = {"name": i.name, "type": i.type}
    if i.widget is not None:
        d["widget"] = i.widget.value
        d["default"] = i.default
    for key in ("min", "max", "step"):
        if getattr(i, key) is not None:
            d[key] = getattr(i, key)
    if i.choices is not None:
        d["choices"] = list(i.choices)
    for key in ("multiline", "optional"):
        if getattr(i, key):
            d[key] = True
    if i.tooltip:
        d["tooltip"] = i.tooltip
    d["to"] = [list(t) for t in i.targets]
    for k, v in i.extra.items():
        d.setdefault(k, v)
    return d


def load_subgraph_file(path: str | os.PathLike[str]) -> list[SubgraphDef]:
    """A standalone component file (``subgraphs/<id>.json``): the definition plus the
    definitions it nests (its own ``subgraphs`` table), all to be registered together."""
    p = Path(path)
    check_size(p)  # component files are shared like workflows: read them as strictly
    try:
        doc = parse_json(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowFileError("file not found", str(p)) from None
    except DuplicateKeyError as exc:
        raise WorkflowFileError(duplicate_key_message(exc), str(p)) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WorkflowFileError(f"cannot read a subgraph component: {exc}", str(p)) from None
    if not isinstance(doc, dict) or doc.get("format") != SUBGRAPH_FORMAT or not isinstance(doc.get("id"), str):
        raise WorkflowFileError(f"not a subgraph component (needs \"format\": \"{SUBGRAPH_FORMAT}\" and an "
                                "'id')", str(p))
    try:
        nested = subgraphs_from_dict(doc.get("subgraphs", {}))
        return [subgraph_from_dict(doc["id"], doc), *nested]
    except WorkflowFileError as exc:
        raise WorkflowFileError(str(exc), str(p)) from None


def save_subgraph_file(graph: Graph, def_id: str, path: str | os.PathLike[str]) -> Path:
    """Write definition ``def_id`` of ``graph`` as a component file, with every definition it
    nests, so it can be dropped into a ``subgraphs/`` folder and used by other workflows."""
    defn = graph.subgraphs[def_id]
    doc = {"format": SUBGRAPH_FORMAT, "id": defn.id, **subgraph_to_dict(defn)}
    nested = _nested_ids(graph, defn)
    if nested:
        doc["subgraphs"] = {sid: subgraph_to_dict(graph.subgraphs[sid]) for sid in nested}
    return atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _nested_ids(graph: Graph, defn: SubgraphDef) -> list[str]:
    found: list[str] = []
    stack = [defn]
    while stack:
        d = stack.pop()
        for older in [d, *d.history.values()]:
            for n in older.graph.nodes.values():
                parsed = parse_type(n.type)
                if parsed and parsed[0] not in found and parsed[0] != defn.id and parsed[0] in graph.subgraphs:
                    found.append(parsed[0])
                    stack.append(graph.subgraphs[parsed[0]])
    return found


def to_dict(graph: Graph) -> dict[str, Any]:
    """Serialise a graph (unknown fields written back).  A graph without subgraphs is
    written as version 1, which older nodegraph versions still read."""
    body = _graph_body(graph)
    doc: dict[str, Any] = {"format": FORMAT, "version": CURRENT_VERSION if graph.subgraphs else 1}
    if "meta" in body:
        doc["meta"] = body.pop("meta")
    doc.update(body)
    if graph.subgraphs:
        doc["subgraphs"] = {sid: subgraph_to_dict(d) for sid, d in graph.subgraphs.items()}
    for k, v in graph.extra.items():
        doc.setdefault(k, v)
    return doc


def _graph_body(graph: Graph) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for n in graph:
        d: dict[str, Any] = {"type": n.type, "values": dict(n.values)}
        if n.mode != "normal":
            d["mode"] = n.mode
        if n.title is not None:
            d["title"] = n.title
        if n.ui:
            d["ui"] = dict(n.ui)
        for k, v in n.extra.items():
            d.setdefault(k, v)
        nodes[n.id] = d
    links = []
    for lk in graph.links + graph.dangling_links:
        d = {"from": [lk.src, lk.src_output], "to": [lk.dst, lk.dst_input]}
        for k, v in lk.extra.items():
            d.setdefault(k, v)
        links.append(d)
    groups = []
    for gr in graph.groups.values():
        d = {"id": gr.id, "title": gr.title, "bounds": list(gr.bounds)}
        if gr.color is not None:
            d["color"] = gr.color
        for k, v in gr.extra.items():
            d.setdefault(k, v)
        groups.append(d)
    doc: dict[str, Any] = {}
    if graph.meta:
        doc["meta"] = dict(graph.meta)
    doc["nodes"] = nodes
    doc["links"] = links
    if groups:
        doc["groups"] = groups
    return doc


def loads(text: str, *, source: str | None = None) -> Graph:
    """Parse workflow JSON text.  Errors name the file and the problem."""
    if not text.strip():
        raise WorkflowFileError(f"the file is empty -> {_WHAT_OPENS}", source)
    try:
        doc = parse_json(text)
    except DuplicateKeyError as exc:
        raise WorkflowFileError(duplicate_key_message(exc), source) from None
    except json.JSONDecodeError as exc:
        raise WorkflowFileError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}) -> fix the "
                                "JSON there (often a trailing comma or a missing quote or bracket)",
                                source) from None
    except RecursionError:
        raise WorkflowFileError("JSON nested too deeply", source) from None
    try:
        return from_dict(doc)
    except WorkflowFileError as exc:
        if source and exc.path is None:
            raise WorkflowFileError(str(exc), source) from None
        raise


def dumps(graph: Graph) -> str:
    """The workflow as standard JSON text (non-finite numbers are written as ``null``)."""
    doc = json.loads(json.dumps(to_dict(graph)))  # a private copy to clean (the graph keeps its values)
    return json.dumps(standard_json(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def load(path: str | os.PathLike[str]) -> Graph:
    """Read a workflow file (``.json``; PNGs are handled by the image pack's reader)."""
    p = Path(path)
    check_size(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowFileError("file not found", str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowFileError(f"cannot read: {exc}", str(p)) from None
    return loads(text, source=str(p))


def save(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write atomically (temp file + fsync + rename): a crash never truncates the file."""
    return atomic_write_text(path, dumps(graph))
