"""Regional prompting in the editor: which nodes carry an area or a mask, the canvas they
refer to, the area overlay drawn on those nodes, and the entry points of the two editors.

Nodes are recognised by their spec, not by type id (the editor names no pack):

* an *area node* takes a CONDITIONING and has ``x``/``y``/``width``/``height`` widgets —
  INT widgets are image pixels (Set Area), FLOAT widgets fractions of the image (Set Area
  with Percentage);
* a *mask source* has an ``image`` choice widget and a MASK output (Load Image, Load Image
  (as Mask) on its alpha channel): its MASK is ``1 - alpha`` of the picture, so the mask
  editor stores the painted mask in the alpha of a copy of the picture (see
  :mod:`gui.mask_editor`);
* a *mask user* takes a MASK and a CONDITIONING (Set Mask): "Edit Mask…" opens the mask
  editor on the mask source feeding it.

The canvas size of an area is the width/height of the latent the area's prompt is sampled
on: from the area node downstream to the node that takes the prompt and a LATENT, then
upstream from that LATENT to a node with width/height widgets (Empty Latent Image); failing
that, any such node in the graph; failing that, the editor asks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QMenu, QMessageBox, QWidget

from nodegraph import Graph, Widget

from . import commands as cmd

if TYPE_CHECKING:
    from .canvas.scene import GraphScene

AREA_KEYS = ("x", "y", "width", "height")
# Colours of the areas shown together: by the nodes' order in the graph, so an area has the
# same colour on every node's overlay and in the editor.
AREA_COLORS = ("#ff5a36", "#2f9bff", "#2fd27a", "#f5c400", "#c65cff", "#00d0d0", "#ff5ab4", "#9aa0a6")
THUMB_W = 214  # the node's preview width (layout: DEFAULT_W - 2 * PAD)
SEARCH_LIMIT = 2000  # nodes visited when looking for the latent: bounded, never recursive

SpecOf = Callable[[str], Any]


def _widget(spec: Any, name: str) -> Any:
    for inp in getattr(spec, "inputs", ()):
        if inp.name == name:
            return inp
    return None


def area_kind(spec: Any) -> str | None:
    """``"pixels"`` (INT x/y/width/height), ``"fractions"`` (FLOAT ones) or None for a node
    that is not an area node."""
    if spec is None or not any(i.type == "CONDITIONING" for i in spec.inputs):
        return None
    widgets = [_widget(spec, k) for k in AREA_KEYS]
    if any(w is None for w in widgets):
        return None
    kinds = {w.widget for w in widgets}
    if kinds == {Widget.INT}:
        return "pixels"
    if kinds == {Widget.FLOAT}:
        return "fractions"
    return None


def is_mask_source(spec: Any) -> bool:
    """A picture loader with a MASK output: Load Image (MASK = 1 - alpha) or Load Image (as
    Mask) (MASK = 1 - alpha when its channel is alpha, see :func:`mask_channel_ok`)."""
    if spec is None:
        return False
    img = _widget(spec, "image")
    return any(o.type == "MASK" for o in spec.outputs) and img is not None and img.widget is Widget.COMBO


def mask_channel_ok(node: Any, spec: Any) -> bool:
    """The node's MASK is its picture's transparency (no channel choice, or channel alpha): the
    only mask the editor can paint."""
    ch = _widget(spec, "channel")
    return ch is None or str(node.values.get("channel", ch.default)) == "alpha"


def is_mask_user(spec: Any) -> bool:
    """A node that takes a MASK and a CONDITIONING (Set Mask)."""
    if spec is None:
        return False
    types = {i.type for i in spec.inputs}
    return {"MASK", "CONDITIONING"} <= types


def mask_source_for(graph: Graph, spec_of: SpecOf, nid: str) -> str | None:
    """The mask source node that ``nid``'s mask comes from: ``nid`` itself, or for a mask user
    the source feeding its MASK input (through pass-through nodes such as reroutes)."""
    node = graph.nodes.get(nid)
    if node is None:
        return None
    spec = spec_of(node.type)
    if is_mask_source(spec):
        return nid
    if not is_mask_user(spec):
        return None
    name = next(i.name for i in spec.inputs if i.type == "MASK")
    link = graph.link_into(nid, name)
    seen = 0
    while link is not None and seen < SEARCH_LIMIT:
        seen += 1
        src = graph.nodes.get(link.src)
        if src is None:
            return None
        if is_mask_source(spec_of(src.type)):
            return src.id
        links = list(graph.links_into(src.id).values())
        link = links[0] if len(links) == 1 else None  # a reroute has one input; anything else: stop
    return None


def _size_of(graph: Graph, spec_of: SpecOf, nid: str) -> tuple[int, int] | None:
    node = graph.nodes[nid]
    spec = spec_of(node.type)
    if spec is None or not any(o.type == "LATENT" for o in spec.outputs):
        return None
    w, h = _widget(spec, "width"), _widget(spec, "height")
    if w is None or h is None or w.widget is not Widget.INT or h.widget is not Widget.INT:
        return None
    if graph.link_into(nid, "width") is not None or graph.link_into(nid, "height") is not None:
        return None
    return int(node.values.get("width", w.default)), int(node.values.get("height", h.default))


def canvas_size(graph: Graph, spec_of: SpecOf, nid: str) -> tuple[int, int] | None:
    """(width, height) in image pixels of the latent ``nid``'s prompt is sampled on, or None."""
    # Downstream from the area node to every node that also takes a LATENT...
    latent_inputs: list[tuple[str, str]] = []
    seen = {nid}
    queue = deque([nid])
    while queue and len(seen) < SEARCH_LIMIT:
        cur = queue.popleft()
        for link in graph.links_from(cur):
            if link.dst in seen:
                continue
            seen.add(link.dst)
            queue.append(link.dst)
            dst = graph.nodes.get(link.dst)
            spec = spec_of(dst.type) if dst is not None else None
            for inp in getattr(spec, "inputs", ()):
                if inp.type == "LATENT":
                    latent_inputs.append((link.dst, inp.name))
    # ...then upstream from those LATENT inputs to a node with width/height.
    up_seen: set[str] = set()
    for dst, name in latent_inputs:
        link = graph.link_into(dst, name)
        queue = deque([link.src] if link is not None else [])
        while queue and len(up_seen) < SEARCH_LIMIT:
            cur = queue.popleft()
            if cur in up_seen or cur not in graph.nodes:
                continue
            up_seen.add(cur)
            size = _size_of(graph, spec_of, cur)
            if size is not None:
                return size
            queue.extend(lk.src for lk in graph.links_into(cur).values())
    for node in graph:
        size = _size_of(graph, spec_of, node.id)
        if size is not None:
            return size
    return None


@dataclass(frozen=True)
class AreaView:
    """An area node's rectangle in image pixels of a canvas of ``size``."""

    node_id: str
    label: str
    rect: QRectF
    kind: str
    color: str = AREA_COLORS[0]


def area_rect(graph: Graph, spec_of: SpecOf, nid: str, size: tuple[int, int]) -> QRectF | None:
    """The area of node ``nid`` in pixels of a ``size`` canvas (fractions scaled); None if the
    node is not an area node or a value is linked (not known before a run)."""
    node = graph.nodes.get(nid)
    spec = spec_of(node.type) if node is not None else None
    kind = area_kind(spec)
    if kind is None or any(graph.link_into(nid, k) is not None for k in AREA_KEYS):
        return None
    v = {k: float(node.values.get(k, _widget(spec, k).default)) for k in AREA_KEYS}
    if kind == "fractions":
        w, h = size
        return QRectF(v["x"] * w, v["y"] * h, v["width"] * w, v["height"] * h)
    return QRectF(v["x"], v["y"], v["width"], v["height"])


def graph_areas(graph: Graph, spec_of: SpecOf, size: tuple[int, int], first: str | None = None) -> list[AreaView]:
    """Every area node of the graph with a known rectangle, each with its colour (by graph
    order); ``first`` (the edited node) is moved to the front."""
    out = []
    for node in graph:
        spec = spec_of(node.type)
        kind = area_kind(spec)
        rect = area_rect(graph, spec_of, node.id, size) if kind else None
        if rect is not None:
            out.append(AreaView(node.id, node.title or spec.display_name, rect, kind,
                                AREA_COLORS[len(out) % len(AREA_COLORS)]))
    out.sort(key=lambda a: a.node_id != first)
    return out


def area_values(spec: Any, kind: str, rect: QRectF, size: tuple[int, int]) -> dict[str, int | float]:
    """Widget values for a rectangle drawn in pixels: pixels snapped to the widgets' step (8 for
    Set Area), at least their minimum and inside the canvas; fractions rounded to the step."""
    cw, ch = size
    r = rect.normalized().intersected(QRectF(0, 0, cw, ch))
    if kind == "fractions":
        frac = {"x": r.x() / cw, "y": r.y() / ch, "width": r.width() / cw, "height": r.height() / ch}
        out: dict[str, int | float] = {}
        for k, val in frac.items():
            inp = _widget(spec, k)
            step = float(inp.step or 0.01)
            val = round(round(val / step) * step, 6)
            lo = float(inp.min if inp.min is not None else 0.0)
            hi = float(inp.max if inp.max is not None else 1.0)
            out[k] = min(hi, max(lo, val))
        return out
    ints: dict[str, int | float] = {}
    for k, val, limit in (("x", r.x(), cw), ("y", r.y(), ch), ("width", r.width(), cw), ("height", r.height(), ch)):
        inp = _widget(spec, k)
        step = int(inp.step or 1)
        lo = int(inp.min if inp.min is not None else 0)
        snapped = math.floor(val / step + 0.5) * step  # half steps round up, not to even
        ints[k] = max(lo, min(snapped, max(lo, (limit // step) * step)))
    # keep the rectangle inside the canvas after snapping
    ints["x"] = max(0, min(int(ints["x"]), cw - int(ints["width"])))
    ints["y"] = max(0, min(int(ints["y"]), ch - int(ints["height"])))
    return ints


def apply_area(scene: GraphScene, nid: str, values: dict[str, int | float]) -> bool:
    """Write an area's values as one undo step ("Set <node> area"); False if nothing changed."""
    node = scene.graph.node(nid)
    changes = {k: v for k, v in values.items() if node.values.get(k, object()) != v}
    if not changes:
        return False
    scene.undo_stack.beginMacro(f"Set {cmd.node_label(scene.graph, nid)} area")
    try:
        for k, v in changes.items():
            scene.push(cmd.SetValueCommand(scene.graph, nid, k, v, merge=False))
    finally:
        scene.undo_stack.endMacro()
    return True


def paint_areas(painter: QPainter, target: QRectF, size: tuple[int, int], areas: list[AreaView],
                current: QRectF | None = None, labels: bool = True) -> None:
    """The canvas (``size`` pixels drawn into ``target``) with every area in its colour; the
    first (the edited node's) solid and stronger, the others dashed; ``current``: the
    rectangle being drawn (replaces the first area's)."""
    cw, ch = size
    sx, sy = target.width() / max(1, cw), target.height() / max(1, ch)
    painter.fillRect(target, QColor("#2a2d33"))
    painter.setPen(QPen(QColor("#5b616b"), 1))
    painter.drawRect(target)
    font = QFont(painter.font())
    font.setPointSizeF(8)
    painter.setFont(font)
    for i, a in enumerate(areas):
        r = current if (i == 0 and current is not None) else a.rect
        color = QColor(a.color)
        shown = QRectF(target.x() + r.x() * sx, target.y() + r.y() * sy, r.width() * sx, r.height() * sy)
        fill = QColor(color)
        fill.setAlpha(90 if i == 0 else 30)
        painter.fillRect(shown.intersected(target), fill)
        painter.setPen(QPen(color, 2 if i == 0 else 1, Qt.PenStyle.SolidLine if i == 0 else Qt.PenStyle.DashLine))
        painter.drawRect(shown)
        if labels:
            painter.setPen(color.lighter(130))
            painter.drawText(shown.adjusted(4, 2, -2, -2), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                             a.label)


def fallback_size(graph: Graph, spec_of: SpecOf, nid: str) -> tuple[int, int]:
    """The canvas assumed when no latent size is found: 512 x 512, grown to hold a pixel area."""
    rect = area_rect(graph, spec_of, nid, (512, 512))
    if rect is None or area_kind(spec_of(graph.node(nid).type)) == "fractions":
        return 512, 512
    return max(512, int(rect.right())), max(512, int(rect.bottom()))


def area_thumbnail(graph: Graph, spec_of: SpecOf, nid: str) -> QImage | None:
    """The overlay shown on an area node: its canvas with this area (and the graph's others)."""
    size = canvas_size(graph, spec_of, nid)
    found = size is not None
    node = graph.nodes.get(nid)
    if node is None:
        return None
    if size is None:
        size = fallback_size(graph, spec_of, nid)
    areas = graph_areas(graph, spec_of, size, first=nid)
    if not areas or areas[0].node_id != nid:
        return None
    cw, ch = size
    h = max(40, min(160, round(THUMB_W * ch / max(1, cw))))
    img = QImage(THUMB_W, h, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(QColor(0, 0, 0, 0))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    # keep the canvas' aspect inside the thumbnail
    tw = min(THUMB_W - 2.0, (h - 2.0) * cw / max(1, ch))
    th = tw * ch / max(1, cw)
    target = QRectF((THUMB_W - tw) / 2, (h - th) / 2, tw, th)
    paint_areas(p, target, size, areas, labels=False)
    p.setPen(QColor("#d8dce2"))
    font = QFont(p.font())
    font.setPointSizeF(7.5)
    p.setFont(font)
    note = "" if found else " (assumed)"
    p.drawText(target.adjusted(3, 0, -3, -2), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
               f"{cw}×{ch}{note} · click to edit")
    p.end()
    return img


# Graph change kinds after which the overlays may need redrawing (not moves).
OVERLAY_KINDS = ("value_changed", "node_added", "node_removed", "link_added", "link_removed", "title_changed")


def refresh_overlays(scene: GraphScene, change: Any = None) -> None:
    """Redraw the area overlay of the area nodes shown.  ``scene.area_nodes`` remembers which
    nodes are area nodes, so a graph without any (the common case) costs one set lookup per
    change; ``change`` None (a new graph) rescans every node."""
    if change is None:
        scene.area_nodes = {n.id for n in scene.graph if area_kind(scene.spec(n.type)) is not None}
    elif change.kind == "node_added":
        node = scene.graph.nodes.get(change.node_id)
        if node is None or area_kind(scene.spec(node.type)) is None:
            return
        scene.area_nodes.add(node.id)
    elif change.kind == "node_removed":
        scene.area_nodes.discard(change.node_id)
    if not scene.area_nodes:
        return
    for nid in list(scene.area_nodes):
        item = scene.node_items.get(nid)
        if item is None or nid not in scene.graph.nodes:
            continue
        img = area_thumbnail(scene.graph, scene.spec, nid)
        if img is None and item.preview is None:
            continue
        scene.set_preview(nid, img)


# -- entry points -------------------------------------------------------------------------------------


def settings_for(scene: GraphScene, parent: QWidget | None) -> dict[str, Any]:
    """The window's settings (input folder) when there is a window, else the scene's."""
    win = parent.window() if parent is not None else None
    settings = getattr(win, "settings", None)
    return settings if isinstance(settings, dict) else scene.settings


def open_area_editor(scene: GraphScene, nid: str, parent: QWidget | None = None) -> Any:
    """Open the area editor on area node ``nid`` (non-modal; returns the dialog)."""
    from .area_editor import AreaEditorDialog

    dlg = AreaEditorDialog(scene, nid, parent)
    dlg.show()
    return dlg


def mask_loader_spec(scene: GraphScene) -> Any:
    """The registry's picture-to-mask loader for new masks: a mask source whose only output is
    MASK and that reads alpha (Load Image (as Mask)), else any mask source (Load Image)."""
    sources = [s for s in scene.registry if is_mask_source(s)]
    for spec in sources:
        ch = _widget(spec, "channel")
        if [o.type for o in spec.outputs] == ["MASK"] and ch is not None and "alpha" in ch.choice_list({}):
            return spec
    return sources[0] if sources else None


def new_mask_for(scene: GraphScene, nid: str) -> Any:
    """What painting a new mask for mask user ``nid`` needs (a :class:`gui.mask_editor.NewMask`),
    or None if ``nid`` is not a mask user with an unconnected MASK input or no loader exists."""
    from .mask_editor import NewMask

    node = scene.graph.nodes.get(nid)
    spec = scene.spec(node.type) if node is not None else None
    if not is_mask_user(spec):
        return None
    name = next(i.name for i in spec.inputs if i.type == "MASK")
    loader = mask_loader_spec(scene)
    if scene.graph.link_into(nid, name) is not None or loader is None:
        return None
    size = canvas_size(scene.graph, scene.spec, nid) or (512, 512)
    output = next(o.name for o in loader.outputs if o.type == "MASK")
    return NewMask(size, loader.type_id, output, name, _widget(loader, "channel") is not None)


def open_mask_editor(scene: GraphScene, nid: str, parent: QWidget | None = None) -> Any:
    """Open the mask editor on the mask source of ``nid`` (itself or what feeds its MASK)."""
    from .mask_editor import MaskEditorDialog

    src = mask_source_for(scene.graph, scene.spec, nid)
    if src is None:
        new = new_mask_for(scene, nid)
        if new is not None:  # an unconnected mask input: paint one from scratch on the latent's canvas
            dlg = MaskEditorDialog(scene, nid, settings_for(scene, parent), parent, new_mask=new)
            dlg.show()
            return dlg
        QMessageBox.information(parent, "Edit Mask", "This node's mask does not come from a Load Image node. "
                                 "Connect a Load Image's MASK output to it, then edit the mask there.")
        return None
    node = scene.graph.node(src)
    if not mask_channel_ok(node, scene.spec(node.type)):
        QMessageBox.information(parent, "Edit Mask", "This node reads its mask from a colour channel; the "
                                 "editor paints the picture's transparency. Set its channel to alpha first.")
        return None
    dlg = MaskEditorDialog(scene, src, settings_for(scene, parent), parent)
    dlg.show()
    return dlg


def context_items(menu: QMenu, scene: GraphScene, nid: str, parent: QWidget | None = None) -> None:
    """Right-click entries: "Edit Area…" on area nodes, "Edit Mask…" on mask sources/users."""
    node = scene.graph.nodes.get(nid)
    if node is None:
        return
    spec = scene.spec(node.type)
    if area_kind(spec) is not None:
        menu.addSeparator()
        menu.addAction("Edit Area…").triggered.connect(lambda _=False: open_area_editor(scene, nid, parent))
    if is_mask_source(spec) or is_mask_user(spec):
        menu.addSeparator()
        menu.addAction("Edit Mask…").triggered.connect(lambda _=False: open_mask_editor(scene, nid, parent))
