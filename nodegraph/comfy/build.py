"""Building our graph from ComfyUI nodes: shared by the UI-format and API-format importers.

Both formats boil down to "create node N of ComfyUI class C with these input
values" and "link output slot k of A to input named x of B"; this module turns
those into our node types, input names and output names through the
registered packs' mappings (:class:`~.mapping.ComfyTable`), keeps unknown
classes as placeholders and records every compromise as a warning, so the two
importers only deal with their own file structure.  Fix-ups a pack needs after
an import (links ComfyUI makes implicitly) are that pack's ``import_hooks``.
"""

from __future__ import annotations

from typing import Any

from ..graph import Graph
from .mapping import SEED_CONTROLS, ComfyTable, NodeMap, placeholder_type
from .result import ImportResult


class Builder:
    """Accumulates nodes and links; :meth:`finish` returns the :class:`ImportResult`."""

    def __init__(self, source: str, table: ComfyTable) -> None:
        self.graph = Graph()
        self.result = ImportResult(self.graph, source=source)
        self.table = table
        self._maps: dict[str, NodeMap] = {}
        self._out_names: dict[str, list[str]] = {}  # placeholders: output names by slot
        self._reroutes: set[str] = set()
        self._in_names: dict[str, dict[str, str]] = {}  # subgraph instances: ComfyUI input -> ours

    def mapping_for(self, class_type: str) -> NodeMap | None:
        """How ComfyUI class ``class_type`` maps onto a registered node type (None: placeholder)."""
        return self.table.mapping_for(class_type)

    def warn(self, message: str) -> None:
        self.result.warnings.append(message)

    # -- nodes ------------------------------------------------------------------------------
    def add_mapped(self, nid: str, nmap: NodeMap, values: dict[str, Any], *, mode: str = "normal",
                   title: str | None = None, ui: dict[str, Any] | None = None,
                   seed_controls: dict[str, str] | None = None) -> None:
        """Node ``nid`` of a mapped class; ``values`` are ComfyUI widget values by ComfyUI input name."""
        ours: dict[str, Any] = {}
        for name, value in values.items():
            p = nmap.param(name)
            if p is None:
                if name not in nmap.ui_widgets:
                    self.warn(f"node {nid!r} ({nmap.comfy}): input {name!r} has no equivalent; ignored")
                continue
            if p.drop:
                continue
            converted, warning = p.to_ours(value)
            if warning:
                self.warn(f"node {nid!r} ({nmap.comfy}): {warning}")
            ours[p.name] = converted
        ui = dict(ui or {})
        controls = {}
        for name, control in (seed_controls or {}).items():
            p = nmap.param(name)
            if p is not None and p.seed and control in SEED_CONTROLS:
                controls[p.name] = control
        if controls:
            ui["seed_control"] = controls
        self.graph.add_node(nmap.ours, ours, id=nid, mode=mode, title=title, ui=ui)
        self._maps[nid] = nmap

    def add_reroute(self, nid: str, *, mode: str = "normal", title: str | None = None,
                    ui: dict[str, Any] | None = None) -> None:
        """A ComfyUI ``Reroute``: the registered reroute node, else a placeholder (no pack offers one)."""
        reroute = self.table.reroute
        if reroute is None:
            self.add_placeholder(nid, "Reroute", {}, {"type": "Reroute"}, output_names=["0"], mode=mode,
                                 title=title, ui=ui)
            return
        self.graph.add_node(reroute.type, {}, id=nid, mode=mode, title=title, ui=dict(ui or {}))
        self._reroutes.add(nid)

    def add_placeholder(self, nid: str, class_type: str, values: dict[str, Any], comfy: dict[str, Any], *,
                        output_names: list[str], mode: str = "normal", title: str | None = None,
                        ui: dict[str, Any] | None = None) -> None:
        """Keep an unmapped node visible: type ``comfy:<Class>``, its original data in ``extra["comfy"]``.

        When the file says which types its ports have (the UI format does), they are kept in
        ``extra["ports"]``: the planner then lets the user *bypass* the unknown node, passing
        each output its first linked input of the same type, as ComfyUI's bypass does."""
        extra: dict[str, Any] = {"comfy": comfy}
        ports = _declared_ports(comfy, output_names)
        if ports is not None:
            extra["ports"] = ports
        self.graph.add_node(placeholder_type(class_type), values, id=nid, mode=mode, title=title,
                            ui=dict(ui or {}), extra=extra)
        self._out_names[nid] = output_names
        self.result.unmapped.append((nid, class_type))

    def add_instance(self, nid: str, node_type: str, values: dict[str, Any], *, input_names: dict[str, str],
                     output_names: list[str], mode: str = "normal", title: str | None = None,
                     ui: dict[str, Any] | None = None) -> None:
        """A subgraph instance (see :mod:`.subgraphs`): links address it by ComfyUI slot names,
        mapped to the subgraph's interface names."""
        self.graph.add_node(node_type, values, id=nid, mode=mode, title=title, ui=dict(ui or {}))
        self._in_names[nid] = dict(input_names)
        self._out_names[nid] = list(output_names)

    def map_of(self, nid: str) -> NodeMap | None:
        return self._maps.get(nid)

    def input_name(self, nid: str, comfy_input: str) -> str | None:
        """Our input name for ComfyUI input ``comfy_input`` of node ``nid`` (None = no equivalent)."""
        if nid in self._reroutes and self.table.reroute is not None:
            return self.table.reroute.input
        if nid in self._in_names:
            return self._in_names[nid].get(comfy_input)
        nmap = self._maps.get(nid)
        if nmap is None:
            return comfy_input
        p = nmap.param(comfy_input)
        return None if p is None or p.drop else p.name

    # -- links --------------------------------------------------------------------------------
    def link(self, src: str, slot: int, dst: str, comfy_input: str) -> None:
        """Connect output ``slot`` of ``src`` to ComfyUI input ``comfy_input`` of ``dst``."""
        if src not in self.graph or dst not in self.graph:
            missing = src if src not in self.graph else dst
            self.warn(f"a link into node {dst!r} input {comfy_input!r} refers to node {missing!r}, which "
                      "does not exist; dropped")
            return
        out = self._output_name(src, slot)
        if out is None:
            self.warn(f"node {dst!r} input {comfy_input!r}: node {src!r} has no output #{slot}; link dropped")
            return
        inp = self.input_name(dst, comfy_input)
        if inp is None:
            nmap = self._maps.get(dst)
            what = nmap.comfy if nmap is not None else self.graph.node(dst).type
            self.warn(f"node {dst!r} ({what}): input {comfy_input!r} has no equivalent; its link was dropped")
            return
        self.graph.connect(src, out, dst, inp)

    def _output_name(self, src: str, slot: int) -> str | None:
        if src in self._reroutes and self.table.reroute is not None:
            return self.table.reroute.output if slot == 0 else None
        nmap = self._maps.get(src)
        names = nmap.outputs if nmap is not None else self._out_names.get(src, [])
        if nmap is None and not names:
            return str(slot)  # an API-format placeholder: outputs are known by index only
        return names[slot] if 0 <= slot < len(names) else None

    # -- finishing -------------------------------------------------------------------------------
    def finish(self) -> ImportResult:
        """The result, after every registered pack's import hooks ran over it."""
        for hook in self.table.import_hooks:
            hook(self.result)
        return self.result


def _declared_ports(comfy: dict[str, Any], output_names: list[str]) -> dict[str, dict[str, str]] | None:
    """``{"inputs": {name: type}, "outputs": {name: type}}`` from a UI-format node, or None."""
    ins, outs = comfy.get("inputs"), comfy.get("outputs")
    if not isinstance(ins, list) and not isinstance(outs, list):
        return None
    inputs: dict[str, str] = {}
    for entry in ins if isinstance(ins, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            continue
        widget = entry.get("widget")
        name = widget.get("name") if isinstance(widget, dict) else entry.get("name")
        if isinstance(name, str):
            inputs[name] = entry["type"]
    outputs: dict[str, str] = {}
    for k, entry in enumerate(outs if isinstance(outs, list) else []):
        if isinstance(entry, dict) and isinstance(entry.get("type"), str) and k < len(output_names):
            outputs[output_names[k]] = entry["type"]
    return {"inputs": inputs, "outputs": outputs}
