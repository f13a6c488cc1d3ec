"""A node on the canvas: title, typed ports, value widgets, state, progress, preview.

Everything is painted by this one item (ports and widgets are rectangles in
:mod:`.layout`, not child items) and cached in device coordinates, so moving
or repainting the view does not re-run this paint.  The item is a *view* of a
:class:`nodegraph.Node`; edits go through the scene's undo stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from nodegraph import Node, NodeSpec, Widget
from nodegraph.types import compatible

from .. import theme
from .layout import (
    DEFAULT_W,
    PORT_HIT,
    PORT_R,
    TITLE_H,
    NodeLayout,
    Row,
    compute_layout,
    float_decimals,
)

if TYPE_CHECKING:
    from .scene import GraphScene

_FONTS: dict[str, QFont] = {}
_FLAGS = QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable


def _font(kind: str) -> QFont:
    f = _FONTS.get(kind)
    if f is None:
        size, bold = {"title": (9.5, True), "label": (8.5, False), "small": (7.5, False)}[kind]
        f = _FONTS[kind] = theme.ui_font(size, bold)
    return f


_TITLE_PATHS: dict[tuple[float, bool], QPainterPath] = {}


def _title_path(width: float, collapsed: bool) -> QPainterPath:
    """Title-bar shape (rounded top; also rounded bottom when collapsed), shared by
    every node of the same width — building it per node costs more than painting."""
    key = (width, collapsed)
    path = _TITLE_PATHS.get(key)
    if path is None:
        path = QPainterPath()
        path.addRoundedRect(QRectF(1, 1, width - 2, TITLE_H - 1), 5, 5)
        if not collapsed:
            path.addRect(QRectF(1, TITLE_H - 6, width - 2, 6))
        path = _TITLE_PATHS[key] = path.simplified()
    return path


def text_box_height(text: str, width: float, font: QFont | None = None) -> float:
    """Height of a prompt box showing ``text`` word-wrapped in a row ``width`` wide
    (the painted box and the editor use the same font and margins, so editing does
    not make the text jump)."""
    fm = QFontMetricsF(font or _font("label"))
    # the row's frame is inset 10 px each side, the text 8 px more (see _paint_row)
    r = fm.boundingRect(QRectF(0, 0, max(20.0, width - 36), 1e6), int(Qt.TextFlag.TextWordWrap), text or "M")
    return r.height() + 16


def text_font() -> QFont:
    """The font prompt boxes are painted (and edited) in."""
    return _font("label")


def format_value(inp: Any, value: Any) -> str:
    """How a constant reads inside its widget row."""
    if value is None:
        return "—"
    w = inp.widget
    if w is Widget.FLOAT:
        try:
            return f"{float(value):.{float_decimals(inp.step)}f}"
        except (TypeError, ValueError):
            return str(value)
    if w is Widget.BOOL:
        return "true" if value else "false"
    text = str(value)
    return text.replace("\n", " ⏎ ")


class NodeItem(QGraphicsItem):
    """View of one graph node."""

    def __init__(self, node: Node, spec: NodeSpec | None, scene: GraphScene) -> None:
        super().__init__()
        self.node = node
        self.spec = spec
        self._scene = scene
        self.is_reroute = scene.is_reroute(node.type)
        self.preview: QImage | None = None
        self.progress: tuple[int, int] | None = None
        self.layout: NodeLayout = NodeLayout(0, 0)
        # No itemChange override (a Python call per flag/pos/z change costs more than the
        # item itself at 500 nodes): the scene moves wires when it moves nodes.
        self.setFlags(_FLAGS)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setAcceptHoverEvents(False)
        if spec is not None and spec.description:
            self.setToolTip(f"{spec.display_name} ({spec.type_id})\n{spec.description}")
        self.setZValue(1)
        self.relayout()
        pos = node.ui.get("pos") or [0, 0]
        self.setPos(float(pos[0]), float(pos[1]))
        self.refresh_mode()

    # -- geometry ---------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.node.id

    def relayout(self) -> None:
        """Recompute rows/ports after a structural change (link, collapse, preview, error)."""
        sc = self._scene
        linked = set(sc.graph.inputs_view(self.node.id)) if self.node.id in sc.graph.nodes else set()
        if self.spec is not None and sc.graph is not sc.root:  # inside a subgraph: inputs its interface feeds
            linked |= {i.name for i in self.spec.inputs if sc.interface_fed(self.node.id, i.name)}
        size = self.node.ui.get("size")
        aspect = self.preview.width() / max(1, self.preview.height()) if self.preview is not None else None
        issues = sc.issues.get(self.node.id, [])
        error = "\n".join(msg for _, msg in issues[:3])
        text = sc.node_text.get(self.node.id, "")
        self.prepareGeometryChange()
        width = float(size[0]) if size else None
        self.layout = compute_layout(self.spec, linked, collapsed=bool(self.node.ui.get("collapsed")),
                                     width=width, preview_aspect=aspect,
                                     text=text, error=error, reroute=self.is_reroute,
                                     multiline_h=self._multiline_heights(linked, max(140.0, width or DEFAULT_W)))
        self._title_path = _title_path(self.layout.width, bool(self.node.ui.get("collapsed")))
        self.update()

    def _multiline_heights(self, linked: set[str], width: float) -> dict[str, float]:
        """How tall each prompt box must be to show its whole text (the open editor
        says for itself: it measures what is being typed)."""
        if self.spec is None or self.node.ui.get("collapsed"):
            return {}
        ed = self._scene.editor
        out = {}
        for inp in self.spec.inputs:
            if not inp.multiline or inp.name in linked:
                continue
            if ed is not None and ed.node_id == self.node.id and ed.input.name == inp.name:
                out[inp.name] = ed.content_height()
            else:
                out[inp.name] = text_box_height(str(self.node.values.get(inp.name, inp.default) or ""), width)
        return out

    @property
    def has_multiline(self) -> bool:
        return self.spec is not None and any(i.multiline for i in self.spec.inputs)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(-PORT_R - 2, -2, self.layout.width + 2 * PORT_R + 4, self.layout.height + 4)

    def shape(self) -> QPainterPath:
        p = QPainterPath()
        p.addRect(QRectF(-PORT_HIT, 0, self.layout.width + 2 * PORT_HIT, self.layout.height))
        return p

    def port_scene_pos(self, direction: str, name: str) -> QPointF:
        ports = self.layout.in_ports if direction == "in" else self.layout.out_ports
        p = ports.get(name)
        if p is None:  # unknown port (e.g. a type whose spec changed): attach to the title
            p = QPointF(0 if direction == "in" else self.layout.width, TITLE_H / 2)
        return self.mapToScene(p)

    def port_at(self, local: QPointF) -> tuple[str, str] | None:
        """("in"|"out", port name) under a point in item coordinates."""
        best, best_d = None, PORT_HIT * PORT_HIT
        for direction, ports in (("in", self.layout.in_ports), ("out", self.layout.out_ports)):
            for name, p in ports.items():
                d = (p.x() - local.x()) ** 2 + (p.y() - local.y()) ** 2
                if d <= best_d:
                    best, best_d = (direction, name), d
        if self.node.ui.get("collapsed") and best is not None:
            return None if len(self.layout.in_ports) + len(self.layout.out_ports) > 2 else best
        return best

    def row_at(self, local: QPointF) -> Row | None:
        for row in self.layout.rows:
            if row.kind in ("widget", "seed_control") and row.rect.adjusted(6, 0, -6, 0).contains(local):
                return row
        return None

    def collapse_toggle_rect(self) -> QRectF:
        return QRectF(4, 4, 18, TITLE_H - 8)

    # -- state -------------------------------------------------------------------------------
    def refresh_mode(self) -> None:
        self.setOpacity(theme.MUTE_OPACITY if self.node.mode == "mute" else 1.0)
        self.update()

    # -- painting ----------------------------------------------------------------------------
    def _port_color(self, direction: str, name: str, typ: str) -> QColor:
        color = QColor(self._scene.registry.types.color(typ))
        f = self._scene.drag_filter
        if f is not None:
            f_dir, f_type, f_node = f
            if f_node == self.node.id or f_dir == direction:
                ok = False
            elif f_dir == "out":  # dragging from an output: inputs that accept it stay lit
                ok = compatible(f_type, typ)
            else:
                ok = compatible(typ, f_type)
            if not ok:
                color = QColor(color.red() // 4 + 20, color.green() // 4 + 20, color.blue() // 4 + 20)
        return color

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        lay = self.layout
        sc = self._scene
        state = sc.states.get(self.node.id)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, lod > 0.3)
        if self.is_reroute:
            self._paint_reroute(painter)
            return
        body = QRectF(0, 0, lay.width, lay.height)
        flagged = bool(state) or self.isSelected() or self.node.id in sc.issues
        border = theme.STATE_COLORS.get(state, theme.NODE_BORDER) if state else theme.NODE_BORDER
        if self.node.id in sc.issues:
            border = theme.ERROR
        if self.isSelected():
            border = theme.NODE_SELECTED if not state and self.node.id not in sc.issues else border.lighter(150)
        color = self.node.ui.get("color")
        title_bg = QColor(color) if color else theme.NODE_TITLE_BG
        if self.spec is None:
            title_bg = QColor("#7a2a2a")
        if lod < 0.35:  # far away: two filled blocks (and an outline if it means something)
            painter.fillRect(body, border if flagged else theme.NODE_BG)
            inset = 4 if flagged else 0
            if flagged:
                painter.fillRect(body.adjusted(inset, inset, -inset, -inset), theme.NODE_BG)
            painter.fillRect(QRectF(inset, inset, lay.width - 2 * inset, TITLE_H - inset), title_bg)
            if self.node.mode == "bypass":
                painter.fillRect(body, theme.BYPASS_TINT)
            return
        painter.setPen(QPen(border, 3 if flagged else 1.2))
        painter.setBrush(theme.NODE_BG)
        painter.drawRoundedRect(body, 6, 6)
        painter.fillPath(self._title_path, title_bg)
        painter.setFont(_font("title"))
        painter.setPen(theme.TEXT)
        tri = "▸" if self.node.ui.get("collapsed") else "▾"
        painter.drawText(self.collapse_toggle_rect(), Qt.AlignmentFlag.AlignCenter, tri)
        title = self.node.title or (self.spec.display_name if self.spec else f"{self.node.type} (unknown)")
        fm = QFontMetricsF(_font("title"))
        badge = sc.badges.get(self.node.id) if self.node.mode == "normal" else None
        badge_w = QFontMetricsF(_font("small")).horizontalAdvance(badge) + 12 if badge else 0.0
        title = fm.elidedText(title, Qt.TextElideMode.ElideRight, lay.width - 34 - badge_w)
        painter.drawText(QRectF(24, 0, lay.width - 30, TITLE_H), Qt.AlignmentFlag.AlignVCenter, title)
        if badge:
            painter.setFont(_font("small"))
            painter.setPen(theme.PROGRESS.lighter(130) if state == "running" else theme.TEXT_DIM)
            painter.drawText(QRectF(0, 0, lay.width - 8, TITLE_H),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, badge)
        if self.node.mode != "normal":
            painter.setFont(_font("small"))
            painter.setPen(theme.TEXT_DIM)
            painter.drawText(QRectF(0, 0, lay.width - 8, TITLE_H),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, self.node.mode.upper())
        if self.progress and state == "running":
            step, total = self.progress
            frac = max(0.0, min(1.0, step / total)) if total else 0.0
            bar = QRectF(1, TITLE_H - 4, (lay.width - 2) * frac, 4)
            painter.fillRect(QRectF(1, TITLE_H - 4, lay.width - 2, 4), QColor("#1e3a20"))
            painter.fillRect(bar, theme.PROGRESS)
        if self.spec is None:
            painter.setFont(_font("label"))
            painter.setPen(theme.ERROR)
            painter.drawText(QRectF(8, TITLE_H, lay.width - 16, lay.height - TITLE_H),
                             Qt.AlignmentFlag.AlignVCenter, "node type not installed")
        for row in lay.rows:
            self._paint_row(painter, row)
        if lay.preview is not None and self.preview is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(lay.preview, self.preview)
        self._paint_ports(painter)
        self._paint_mode_overlay(painter, body)

    def _paint_mode_overlay(self, painter: QPainter, body: QRectF) -> None:
        if self.node.mode == "bypass":
            painter.setPen(QPen(QColor("#b36bd6"), 2, Qt.PenStyle.DashLine))
            painter.setBrush(theme.BYPASS_TINT)
            painter.drawRoundedRect(body, 6, 6)

    def _paint_reroute(self, painter: QPainter) -> None:
        lay = self.layout
        link = self._scene.graph.link_into(self.node.id, "input")
        typ = "*"
        if link is not None:
            typ = self._scene.output_type(link.src, link.src_output) or "*"
        color = QColor(self._scene.registry.types.color(typ))
        pen = QPen(theme.NODE_SELECTED if self.isSelected() else theme.NODE_BORDER, 2)
        painter.setPen(pen)
        painter.setBrush(color)
        r = lay.width / 2
        painter.drawEllipse(QPointF(r, r), r - 6, r - 6)

    def _paint_ports(self, painter: QPainter, small: bool = False) -> None:
        lay = self.layout
        sc = self._scene
        linked_in = sc.graph.inputs_view(self.node.id)
        has_out = sc.linked_outputs(self.node.id)
        collapsed = bool(self.node.ui.get("collapsed"))
        painter.setPen(QPen(theme.NODE_BORDER, 1.2))
        for direction, ports, types in (("in", lay.in_ports, lay.in_types), ("out", lay.out_ports, lay.out_types)):
            for name, p in ports.items():
                typ = types.get(name, "*")
                if direction == "in" and collapsed and name not in linked_in:
                    continue
                inp = self.spec.input(name) if (self.spec and direction == "in") else None
                color = self._port_color(direction, name, typ)
                connected = name in linked_in if direction == "in" else name in has_out
                if not connected and direction == "in" and sc.graph is not sc.root:
                    connected = sc.interface_fed(self.node.id, name)
                painter.setBrush(color if connected or small else theme.NODE_BG)
                painter.setPen(QPen(color, 2))
                r = PORT_R - (1.5 if inp is not None and inp.widget is not None and not connected else 0)
                painter.drawEllipse(p, r, r)

    def _paint_row(self, painter: QPainter, row: Row) -> None:
        rect = row.rect
        sc = self._scene
        painter.setFont(_font("label"))
        bad_inputs = {inp for inp, _ in sc.issues.get(self.node.id, []) if inp}
        if row.kind == "slot":
            if row.input is not None:
                painter.setPen(theme.ERROR if row.input.name in bad_inputs else theme.TEXT_DIM)
                label = row.input.name + ("" if not row.input.optional else " (opt)")
                painter.drawText(rect.adjusted(14, 0, -rect.width() / 2, 0), Qt.AlignmentFlag.AlignVCenter, label)
            if row.output is not None:
                painter.setPen(theme.TEXT_DIM)
                painter.drawText(rect.adjusted(rect.width() / 2, 0, -14, 0),
                                 Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, row.output.name)
            return
        if row.kind == "text":
            painter.setPen(theme.TEXT)
            painter.setBrush(theme.WIDGET_BG)
            painter.drawRoundedRect(rect.adjusted(8, 0, -8, 0), 4, 4)
            painter.drawText(rect.adjusted(14, 4, -14, -4), Qt.TextFlag.TextWordWrap, row.text)
            return
        if row.kind == "error":
            painter.setPen(theme.ERROR)
            painter.setFont(_font("small"))
            painter.drawText(rect.adjusted(10, 2, -10, -2), Qt.TextFlag.TextWordWrap, row.text)
            return
        inp = row.input
        assert inp is not None
        frame = rect.adjusted(10, 1, -10, -1)
        linked = sc.graph.link_into(self.node.id, inp.name) is not None or (
            sc.graph is not sc.root and sc.interface_fed(self.node.id, inp.name))
        bad = inp.name in bad_inputs
        painter.setPen(QPen(theme.ERROR if bad else QColor("#3a3c42"), 1.5 if bad else 1))
        painter.setBrush(theme.WIDGET_BG_LINKED if linked else theme.WIDGET_BG)
        painter.drawRoundedRect(frame, 9 if frame.height() < 30 else 4, 9 if frame.height() < 30 else 4)
        inner = frame.adjusted(10, 0, -10, 0)
        if row.kind == "seed_control":
            mode = sc.seed_control(self.node, inp.name)
            painter.setPen(theme.TEXT_DIM)
            painter.drawText(inner, Qt.AlignmentFlag.AlignVCenter, "control after run")
            painter.setPen(theme.TEXT)
            painter.drawText(inner, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{mode} ▾")
            return
        if linked:
            painter.setPen(theme.TEXT_DIM)
            painter.drawText(inner, Qt.AlignmentFlag.AlignVCenter, f"{inp.name}  ← linked")
            return
        value = self.node.values.get(inp.name, inp.default)
        if inp.multiline:
            painter.setPen(theme.TEXT if value else theme.TEXT_DIM)
            painter.drawText(frame.adjusted(8, 4, -8, -4), Qt.TextFlag.TextWordWrap, str(value or inp.name))
            return
        if inp.widget in (Widget.INT, Widget.FLOAT, Widget.SEED):
            inner = frame.adjusted(16, 0, -16, 0)  # room for the step arrows
        painter.setPen(theme.TEXT_DIM)
        fm = QFontMetricsF(_font("label"))
        name_w = min(fm.horizontalAdvance(inp.name) + 4, inner.width() * 0.55)
        painter.drawText(QRectF(inner.left(), inner.top(), name_w, inner.height()), Qt.AlignmentFlag.AlignVCenter,
                         fm.elidedText(inp.name, Qt.TextElideMode.ElideRight, name_w))
        painter.setPen(theme.TEXT)
        text = format_value(inp, value)
        value_rect = QRectF(inner.left() + name_w + 6, inner.top(), inner.width() - name_w - 6, inner.height())
        if inp.widget in (Widget.INT, Widget.FLOAT, Widget.SEED):
            painter.setPen(theme.TEXT_DIM)
            painter.drawText(frame.adjusted(3, 0, 0, 0), Qt.AlignmentFlag.AlignVCenter, "◂")
            painter.drawText(frame.adjusted(0, 0, -3, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                             "▸")
            painter.setPen(theme.TEXT)
        elif inp.widget is Widget.COMBO:
            text += "  ▾"
        elif inp.widget is Widget.BOOL:
            box = QRectF(inner.right() - 12, inner.center().y() - 6, 12, 12)
            painter.setBrush(QBrush(QColor("#5b8ed6")) if value else Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(theme.TEXT_DIM, 1))
            painter.drawRoundedRect(box, 2, 2)
            return
        painter.drawText(value_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                         fm.elidedText(text, Qt.TextElideMode.ElideMiddle, value_rect.width()))
