"""The canvas view: pan/zoom, wiring by drag, inline editing, node search, drops.

Gestures (Blender/Nuke/ComfyUI habits):

* wheel zooms about the cursor; middle-drag or Space+drag pans;
* left-drag on empty canvas rubber-band selects; on a node moves the selection;
* drag from a port to a compatible port connects (incompatible ports dim while
  dragging and refuse the drop); drop on empty canvas opens the search filtered
  to compatible node types and connects the node you pick; dragging away from a
  connected input picks its wire up (drop on nothing = disconnect);
* double-click or Tab opens the search; double-click on a wire inserts a reroute.
"""

from __future__ import annotations

import math

import shiboken6
from PySide6.QtCore import QEvent, QLineF, QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import QGraphicsView, QWidget

from nodegraph import Widget
from nodegraph.types import compatible

from .. import commands as cmd
from .. import regions, theme
from ..search import PortFilter, SearchPalette
from .editors import open_editor
from .layout import TITLE_H
from .legibility import legible_zoom
from .node_item import NodeItem
from .placement import free_spot
from .scene import GraphScene
from .wire_item import WireItem

NODE_MIME = "application/x-nodegraph-node-type"
MIN_ZOOM, MAX_ZOOM = 0.08, 4.0
FAR_ZOOM = 0.35  # below this nodes are drawn as plain blocks (see NodeItem.paint)


class GraphView(QGraphicsView):
    """Interactive view of a :class:`GraphScene`."""

    filesDropped = Signal(list)
    statusMessage = Signal(str)

    def __init__(self, scene: GraphScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.gscene = scene
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlags(QGraphicsView.OptimizationFlag.DontSavePainterState)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSceneRect(QRectF(-50000, -50000, 100000, 100000))
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_last: QPoint | None = None
        self._space = False
        self._wire: WireItem | None = None
        self._wire_from: tuple[str, str, str] | None = None  # (direction, node id, port)
        self._wire_detached: tuple[str, str] | None = None  # (dst, input) picked up from an input
        self._pending: tuple[tuple[str, str, str] | None, QPointF, tuple[str, str] | None] | None = None
        self._last_scene_pos = QPointF(0, 0)
        self.search = SearchPalette(scene.registry, self)
        self.search.chosen.connect(self._search_chosen)
        self.search.cancelled.connect(self._search_cancelled)
        self._zoom_settle = QTimer(self)  # wheel zoom: node caches come back once it settles
        self._zoom_settle.setSingleShot(True)
        self._zoom_settle.setInterval(180)
        self._zoom_settle.timeout.connect(lambda: self.gscene.set_zooming(False))
        self._drop_wire: WireItem | None = None  # the dropped wire, shown while its search is open

    # -- helpers --------------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, z: float, anchor: QPointF | None = None) -> None:
        z = max(MIN_ZOOM, min(MAX_ZOOM, z))
        anchor_view = self.mapFromScene(anchor) if anchor is not None else self.viewport().rect().center()
        anchor_scene = self.mapToScene(anchor_view)
        self.resetTransform()
        self.scale(z, z)
        delta = self.mapToScene(anchor_view) - anchor_scene
        self.translate(delta.x(), delta.y())
        self.gscene.set_far(z < FAR_ZOOM)

    def frame_rect(self, rect: QRectF) -> None:
        if rect.isNull() or rect.isEmpty():
            return
        rect = rect.adjusted(-40, -40, 40, 40)
        vp = self.viewport().rect()
        fit = min(vp.width() / rect.width(), vp.height() / rect.height(), 1.25)
        z = max(MIN_ZOOM, fit, min(1.25, legible_zoom(self.viewport())))  # never fit into unreadable text
        self.resetTransform()
        self.scale(z, z)
        # what does not fit shows from its top-left corner, where a pipeline starts
        cx = rect.center().x() if rect.width() * z <= vp.width() else rect.left() + vp.width() / (2 * z)
        cy = rect.center().y() if rect.height() * z <= vp.height() else rect.top() + vp.height() / (2 * z)
        self.centerOn(QPointF(cx, cy))
        self.gscene.set_far(self.zoom() < FAR_ZOOM)

    def frame_all(self) -> None:
        self.frame_rect(self.gscene.nodes_rect())

    def frame_selection(self) -> None:
        ids = self.gscene.selected_node_ids()
        self.frame_rect(self.gscene.nodes_rect(ids) if ids else self.gscene.nodes_rect())

    def node_at(self, view_pos: QPoint) -> NodeItem | None:
        for item in self.items(view_pos):
            if isinstance(item, NodeItem):
                return item
        return None

    def port_at(self, view_pos: QPoint) -> tuple[NodeItem, str, str] | None:
        scene_pos = self.mapToScene(view_pos)
        for item in self.gscene.items(QRectF(scene_pos.x() - 12, scene_pos.y() - 12, 24, 24)):
            if isinstance(item, NodeItem):
                hit = item.port_at(item.mapFromScene(scene_pos))
                if hit is not None:
                    return item, hit[0], hit[1]
        return None

    def _port_type(self, direction: str, nid: str, port: str) -> str:
        sc = self.gscene
        t = sc.output_type(nid, port) if direction == "out" else sc.input_type(nid, port)
        return t or "*"

    # -- connecting -----------------------------------------------------------------------------
    def can_connect(self, src: str, out: str, dst: str, inp: str) -> tuple[bool, str]:
        """Whether ``src.out → dst.inp`` is allowed, and why not."""
        if src == dst:
            return False, "a node cannot feed itself"
        ot, it = self._port_type("out", src, out), self._port_type("in", dst, inp)
        if not compatible(ot, it):
            return False, f"{ot} cannot feed an input of type {it}"
        g = self.gscene.graph  # refuse cycles: is src reachable downstream from dst?
        stack, seen = [dst], set()
        while stack:
            n = stack.pop()
            if n == src:
                return False, "that link would make a cycle"
            if n in seen:
                continue
            seen.add(n)
            stack.extend(lk.dst for lk in g.links_from(n))
        return True, ""

    def connect_ports(self, src: str, out: str, dst: str, inp: str) -> bool:
        ok, why = self.can_connect(src, out, dst, inp)
        if not ok:
            self.statusMessage.emit(f"Cannot connect: {why}")
            return False
        lk = self.gscene.graph.link_into(dst, inp)
        if lk is not None and (lk.src, lk.src_output) == (src, out):
            return True
        self.gscene.push(cmd.ConnectCommand(self.gscene.graph, src, out, dst, inp))
        return True

    def _begin_wire(self, item: NodeItem, direction: str, port: str) -> None:
        sc = self.gscene
        self._wire_detached = None
        if direction == "in":
            lk = sc.graph.link_into(item.node_id, port)
            if lk is not None:  # pick the existing wire up by its input end
                self._wire_detached = (lk.dst, lk.dst_input)
                direction, nid, port = "out", lk.src, lk.src_output
                item = sc.node_items[nid]
                sc.wires[(lk.dst, lk.dst_input)].setVisible(False)
        self._wire_from = (direction, item.node_id, port)
        typ = self._port_type(direction, item.node_id, port)
        self._wire = WireItem(None, QColor(sc.registry.types.color(typ)))
        sc.addItem(self._wire)
        sc.drag_filter = (direction, typ, item.node_id)
        for it in sc.node_items.values():
            it.update()
        start = item.port_scene_pos(direction, port)
        self._wire.set_ends(start, start)

    def _update_wire(self, scene_pos: QPointF) -> None:
        assert self._wire is not None and self._wire_from is not None
        direction, nid, port = self._wire_from
        start = self.gscene.node_items[nid].port_scene_pos(direction, port)
        if direction == "out":
            self._wire.set_ends(start, scene_pos)
        else:
            self._wire.set_ends(scene_pos, start)

    def _end_wire(self, view_pos: QPoint) -> None:
        sc = self.gscene
        assert self._wire_from is not None
        direction, nid, port = self._wire_from
        detached = self._wire_detached
        wire, self._wire = self._wire, None
        self._wire_from = None
        self._wire_detached = None
        sc.drag_filter = None
        for it in sc.node_items.values():
            it.update()
        if detached is not None and detached in sc.wires:
            sc.wires[detached].setVisible(True)
        hit = self.port_at(view_pos)
        if wire is not None and (hit is not None or detached is not None or self.node_at(view_pos) is not None):
            sc.removeItem(wire)
            wire = None
        scene_pos = self.mapToScene(view_pos)
        if hit is not None:
            target, t_dir, t_port = hit
            if t_dir == direction:
                self.statusMessage.emit("Cannot connect: both ends are " + ("outputs" if t_dir == "out" else "inputs"))
                return
            src, out, dst, inp = (nid, port, target.node_id, t_port) if direction == "out" else (
                target.node_id, t_port, nid, port)
            if detached is not None and detached == (dst, inp):
                return  # dropped back where it was
            if detached is not None:
                sc.undo_stack.beginMacro("Move link")
                sc.push(cmd.DisconnectCommand(sc.graph, *detached))
                if not self.connect_ports(src, out, dst, inp):
                    sc.undo_stack.endMacro()
                    sc.undo_stack.undo()  # refused: put the old link back, leave no trace
                    return
                sc.undo_stack.endMacro()
            else:
                self.connect_ports(src, out, dst, inp)
            return
        if self.node_at(view_pos) is not None:
            if detached is not None:
                sc.push(cmd.DisconnectCommand(sc.graph, *detached))
            return
        if detached is not None:
            sc.push(cmd.DisconnectCommand(sc.graph, *detached))
            return
        # Dropped on empty canvas: search for a node that fits, then connect it.  The wire
        # stays where it was dropped while the search is open, so it is clear what the
        # new node will be connected to.
        typ = self._port_type(direction, nid, port)
        self.open_search(scene_pos, (direction, nid, port), PortFilter(direction, typ))
        self._drop_wire = wire

    # -- search -----------------------------------------------------------------------------------
    def open_search(self, scene_pos: QPointF, pending: tuple[str, str, str] | None = None,
                    port_filter: PortFilter | None = None) -> None:
        self._clear_drop_wire()
        self._pending = (pending, scene_pos, None)
        vp = self.mapFromScene(scene_pos)
        x = max(0, min(vp.x(), self.width() - self.search.width()))
        y = max(0, min(vp.y(), self.height() - self.search.height()))
        self.search.move(x, y)
        self.search.open(port_filter)

    def _clear_drop_wire(self) -> None:
        wire, self._drop_wire = self._drop_wire, None
        if wire is not None and shiboken6.isValid(wire) and wire.scene() is self.gscene:
            self.gscene.removeItem(wire)

    def _search_cancelled(self) -> None:
        self._pending = None
        self._clear_drop_wire()

    def _search_chosen(self, type_id: str) -> None:
        pending, scene_pos, _ = self._pending or (None, self._last_scene_pos, None)
        self._pending = None
        self._clear_drop_wire()
        self.add_node(type_id, scene_pos, pending)

    def add_node(self, type_id: str, scene_pos: QPointF, pending: tuple[str, str, str] | None = None) -> str:
        """Add a node at ``scene_pos`` (and wire it to ``pending`` port); one undo step."""
        sc = self.gscene
        spec = sc.spec(type_id)
        want = QPointF(scene_pos.x() - (240 if pending is not None and pending[0] == "in" else 0),
                       scene_pos.y() - TITLE_H / 2)  # a node feeding an input goes on its left
        spot = free_spot(sc, want)  # never on top of another node
        pos = [round(spot.x()), round(spot.y())]
        sc.undo_stack.beginMacro(f"Add {spec.display_name if spec else type_id}")
        ui: dict = {"pos": pos}
        seeds = [i.name for i in spec.inputs if i.widget is Widget.SEED] if spec is not None else []
        if seeds:  # as in ComfyUI, a new sampler gets a new seed after each run
            ui["seed_control"] = {name: "randomize" for name in seeds}
        add = cmd.AddNodeCommand(sc.graph, type_id, ui=ui)
        sc.push(add)
        if pending is not None and spec is not None:
            direction, nid, port = pending
            other = PortFilter(direction, self._port_type(direction, nid, port)).port_for(spec)
            if other is not None:
                if direction == "out":
                    self.connect_ports(nid, port, add.node_id, other)
                else:
                    self.connect_ports(add.node_id, other, nid, port)
        sc.undo_stack.endMacro()
        sc.select_nodes([add.node_id])
        return add.node_id

    def insert_reroute(self, wire: WireItem, scene_pos: QPointF) -> str | None:
        """Split ``wire`` with the registered pass-through node; None if no pack registered one."""
        sc = self.gscene
        lk, reroute = wire.link, sc.reroute
        if reroute is None:
            return None
        sc.undo_stack.beginMacro("Add reroute")
        add = cmd.AddNodeCommand(sc.graph, reroute.type, ui={"pos": [scene_pos.x() - 14, scene_pos.y() - 14]})
        sc.push(add)
        sc.push(cmd.ConnectCommand(sc.graph, lk.src, lk.src_output, add.node_id, reroute.input))
        sc.push(cmd.ConnectCommand(sc.graph, add.node_id, reroute.output, lk.dst, lk.dst_input))
        sc.undo_stack.endMacro()
        return add.node_id

    # -- widget rows ------------------------------------------------------------------------------
    def _press_on_node(self, item: NodeItem, local: QPointF, double: bool = False) -> bool:
        """Handle a click on a node's own controls; True if consumed."""
        sc = self.gscene
        if item.collapse_toggle_rect().contains(local) and not item.is_reroute:
            sc.toggle_collapse(item.node_id)
            return True
        if item.node_id in sc.area_nodes and item.layout.preview is not None and item.preview is not None \
                and item.layout.preview.contains(local):
            regions.open_area_editor(sc, item.node_id, self)  # the area overlay opens its editor
            return True
        row = item.row_at(local)
        if row is None or row.input is None:
            return False
        inp = row.input
        if sc.graph.link_into(item.node_id, inp.name) is not None or sc.interface_fed(item.node_id, inp.name):
            return False
        if row.kind == "seed_control":
            sc.cycle_seed_control(item.node_id, inp.name)
            return True
        if inp.widget is Widget.BOOL:
            sc.set_value(item.node_id, inp.name, not bool(item.node.values.get(inp.name, inp.default)))
            return True
        if inp.widget in (Widget.INT, Widget.FLOAT, Widget.SEED):
            if local.x() < row.rect.left() + 26:
                sc.step_value(item.node_id, inp.name, -1)
                return True
            if local.x() > row.rect.right() - 26:
                sc.step_value(item.node_id, inp.name, +1)
                return True
        sc.clearSelection()
        item.setSelected(True)
        open_editor(sc, item, inp)
        return True

    # -- events -------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        pos = event.position().toPoint()
        sc = self.gscene
        self._last_scene_pos = self.mapToScene(pos)
        if self.search.isVisible() and not self.search.geometry().contains(pos):
            self.search.hide()
            self._search_cancelled()
        if sc.editor is not None:
            under = self.itemAt(pos)
            if under is not sc.editor.proxy:
                sc.close_editor(commit=True)
            else:
                return super().mousePressEvent(event)
        if event.button() == Qt.MouseButton.MiddleButton or (
                event.button() == Qt.MouseButton.LeftButton and self._space):
            self._pan_last = pos
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if event.button() == Qt.MouseButton.LeftButton:
            hit = self.port_at(pos)
            if hit is not None:
                item, direction, port = hit
                self._begin_wire(item, direction, port)
                return
            item = self.node_at(pos)
            if item is not None and self._press_on_node(item, item.mapFromScene(self.mapToScene(pos))):
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position().toPoint()
        self._last_scene_pos = self.mapToScene(pos)
        if self._pan_last is not None:
            d = pos - self._pan_last
            self._pan_last = pos
            z = self.zoom()
            self.translate(d.x() / z, d.y() / z)
            return
        if self._wire is not None:
            self._update_wire(self.mapToScene(pos))
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position().toPoint()
        if self._pan_last is not None:
            self._pan_last = None
            self.viewport().unsetCursor()
            return
        if self._wire is not None:
            self._end_wire(pos)
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position().toPoint()
        scene_pos = self.mapToScene(pos)
        under = self.itemAt(pos)
        if isinstance(under, WireItem) and under.link is not None:
            self.insert_reroute(under, scene_pos)
            return
        if under is None:
            self.open_search(scene_pos)
            return
        super().mouseDoubleClickEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if self.gscene.editor is not None and self.itemAt(event.position().toPoint()) is self.gscene.editor.proxy:
            return super().wheelEvent(event)
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.gscene.set_zooming(True, self.zoom())
            self._zoom_settle.start()
            self.set_zoom(self.zoom() * math.pow(1.15, steps), self.mapToScene(event.position().toPoint()))

    def event(self, event: QEvent) -> bool:
        # Tab would move keyboard focus; on the canvas it opens the node search.
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent) \
                and event.key() == Qt.Key.Key_Tab and self.gscene.editor is None:
            self.open_search(self.mapToScene(self.mapFromGlobal(self.cursor().pos()))
                             if self.underMouse() else self.mapToScene(self.viewport().rect().center()))
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat() and self.gscene.editor is None:
            self._space = True
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            return
        super().keyReleaseEvent(event)

    # -- drag and drop ------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        md = event.mimeData()
        if md.hasFormat(NODE_MIME) or md.hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        md = event.mimeData()
        if md.hasFormat(NODE_MIME) or md.hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        md = event.mimeData()
        if md.hasFormat(NODE_MIME):
            type_id = bytes(md.data(NODE_MIME).data()).decode()
            self.add_node(type_id, self.mapToScene(event.position().toPoint()))
            event.acceptProposedAction()
            return
        if md.hasUrls():
            paths = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
            if paths:
                self._last_scene_pos = self.mapToScene(event.position().toPoint())  # where to put a picture
                self.filesDropped.emit(paths)
                event.acceptProposedAction()
                return
        super().dropEvent(event)

    # -- background ---------------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        painter.fillRect(rect, theme.CANVAS_BG)
        # Grid lines are axis-aligned hairlines: antialiasing them buys nothing visible and
        # cost about a third of a full repaint (every zoom and pan step repaints the grid).
        antialiased = painter.testRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self._draw_grid(painter, rect)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, antialiased)  # items share this painter

    def _draw_grid(self, painter: QPainter, rect: QRectF) -> None:
        z = self.zoom()
        step = 24.0
        for grid, color, min_zoom in ((step, theme.GRID_MINOR, 0.6), (step * 5, theme.GRID_MAJOR, 0.15)):
            if z < min_zoom:
                continue
            painter.setPen(QPen(color, 0))
            left = math.floor(rect.left() / grid) * grid
            top = math.floor(rect.top() / grid) * grid
            x = left
            lines = []
            while x < rect.right():
                lines.append(QLineF(x, rect.top(), x, rect.bottom()))
                x += grid
            y = top
            while y < rect.bottom():
                lines.append(QLineF(rect.left(), y, rect.right(), y))
                y += grid
            painter.drawLines(lines)
