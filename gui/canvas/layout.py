"""Where things are inside a node: rows, ports, widgets, preview.

Computed once per structural change (not per paint), from the node's spec,
its links and its editor state.  Ports are *not* child items: the node paints
them and hit-tests them from these rectangles, which is what keeps a 500-node
canvas cheap to build and to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF

from nodegraph import Input, NodeSpec, Output, Widget

TITLE_H = 26.0
ROW_H = 22.0
MULTILINE_H = 68.0  # a prompt box's least height; it grows with its text...
MULTILINE_MAX_H = 260.0  # ...up to this, then its editor scrolls
PAD = 8.0
PORT_R = 5.0
PORT_HIT = 10.0
DEFAULT_W = 230.0
REROUTE_W = 28.0
PREVIEW_MAX_H = 256.0


@dataclass
class Row:
    """One horizontal band of a node.  ``kind``: slot (link-only input and/or an
    output), widget (a value editor whose input may also be linked), seed_control,
    text (a node's displayed text), error."""

    kind: str
    rect: QRectF
    input: Input | None = None
    output: Output | None = None
    text: str = ""


@dataclass
class NodeLayout:
    width: float
    height: float
    rows: list[Row] = field(default_factory=list)
    in_ports: dict[str, QPointF] = field(default_factory=dict)
    out_ports: dict[str, QPointF] = field(default_factory=dict)
    in_types: dict[str, str] = field(default_factory=dict)
    out_types: dict[str, str] = field(default_factory=dict)
    preview: QRectF | None = None


def float_decimals(step: float | None) -> int:
    """Decimals a FLOAT widget shows: enough to display one step (0.01 → 2)."""
    if not step or step <= 0:
        return 2
    return max(0, min(6, math.ceil(-math.log10(step) - 1e-9)))


def compute_layout(spec: NodeSpec | None, linked_inputs: set[str], *, collapsed: bool = False,
                   width: float | None = None, preview_aspect: float | None = None,
                   text: str = "", error: str = "", reroute: bool = False,
                   multiline_h: Mapping[str, float] | None = None) -> NodeLayout:
    """Geometry of a node in its own coordinates (origin = top-left of the title).
    ``multiline_h``: the height each multi-line text box wants (it grows with its text)."""
    if reroute:
        w = REROUTE_W
        lay = NodeLayout(w, w)
        lay.in_ports["input"] = QPointF(0, w / 2)
        lay.out_ports["output"] = QPointF(w, w / 2)
        lay.in_types["input"] = "*"
        lay.out_types["output"] = "*"
        return lay
    w = max(140.0, width or DEFAULT_W)
    lay = NodeLayout(w, TITLE_H)
    if spec is None:  # unknown node type: a red box with its type, no ports to invent
        lay.height = TITLE_H + ROW_H + PAD
        return lay
    for i in spec.inputs:
        lay.in_types[i.name] = i.type
    for o in spec.outputs:
        lay.out_types[o.name] = o.type
    if collapsed:
        mid = TITLE_H / 2
        for i in spec.inputs:
            lay.in_ports[i.name] = QPointF(0, mid)
        for o in spec.outputs:
            lay.out_ports[o.name] = QPointF(w, mid)
        return lay
    y = TITLE_H + 4
    slots_in = [i for i in spec.inputs if i.widget is None]
    widgets = [i for i in spec.inputs if i.widget is not None]
    for k in range(max(len(slots_in), len(spec.outputs))):
        rect = QRectF(0, y, w, ROW_H)
        inp = slots_in[k] if k < len(slots_in) else None
        out = spec.outputs[k] if k < len(spec.outputs) else None
        lay.rows.append(Row("slot", rect, inp, out))
        if inp is not None:
            lay.in_ports[inp.name] = QPointF(0, rect.center().y())
        if out is not None:
            lay.out_ports[out.name] = QPointF(w, rect.center().y())
        y += ROW_H
    for inp in widgets:
        h = ROW_H
        if inp.multiline and inp.name not in linked_inputs:
            want = (multiline_h or {}).get(inp.name, MULTILINE_H)
            h = max(MULTILINE_H, min(MULTILINE_MAX_H, want))
        rect = QRectF(0, y + 1, w, h - 2)
        lay.rows.append(Row("widget", rect, inp))
        lay.in_ports[inp.name] = QPointF(0, rect.center().y() if h == ROW_H else y + ROW_H / 2)
        y += h
        if inp.widget is Widget.SEED and inp.name not in linked_inputs:
            lay.rows.append(Row("seed_control", QRectF(0, y + 1, w, ROW_H - 2), inp))
            y += ROW_H
    if text:
        lines = min(8, text.count("\n") + 1 + len(text) // 40)
        h = 16.0 * lines + 8
        lay.rows.append(Row("text", QRectF(0, y + 2, w, h), text=text))
        y += h + 2
    if preview_aspect:
        pw = w - 2 * PAD
        ph = min(PREVIEW_MAX_H, pw / max(preview_aspect, 1e-3))
        lay.preview = QRectF(PAD, y + 4, pw, ph)
        y += ph + 8
    if error:
        lines = min(6, error.count("\n") + 1 + len(error) // 36)
        h = 15.0 * lines + 8
        lay.rows.append(Row("error", QRectF(0, y + 2, w, h), text=error))
        y += h + 2
    lay.height = y + PAD / 2
    return lay
