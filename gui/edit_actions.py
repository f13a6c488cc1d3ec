"""Edit commands on the selection (copy/paste, delete, bypass, collapse, rename,
group, align, the canvas context menu).

Each one reads the selection from the scene and pushes undoable commands; none
touches items directly, so undo/redo stays exact (see :mod:`gui.commands`).
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QPointF
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QInputDialog, QMenu, QWidget

from . import commands as cmd
from . import regions
from .alignment import align
from .canvas import GraphScene, GraphView
from .canvas.group_item import GROUP_TITLE_H
from .clipboard import copy_to_clipboard, fragment, fragment_origin, read_clipboard
from .node_style import add_input_links


class EditActions:
    """The editing verbs of one canvas."""

    def __init__(self, parent: QWidget, scene: GraphScene, view: GraphView, undo: QUndoStack,
                 owner: Any = None) -> None:
        self.parent = parent  # dialogs and menus
        self.owner = owner if owner is not None else parent  # has the tab's ``subgraph_actions``
        self.scene = scene
        self.view = view
        self.undo = undo

    @property
    def graph(self) -> Any:
        return self.scene.graph

    def select_all(self) -> None:
        for item in self.scene.node_items.values():
            item.setSelected(True)

    def copy(self) -> int:
        ids = self.scene.selected_node_ids()
        if ids:
            doc = fragment(self.graph, ids, self.scene.selected_group_ids())
            subgraphs = getattr(self.owner, "subgraph_actions", None)
            if subgraphs is not None:  # subgraph nodes travel with their definitions
                subgraphs.attach_definitions(doc)
            copy_to_clipboard(add_input_links(doc, self.graph, ids))  # for Ctrl+Shift+V
        return len(ids)

    def paste(self, doc: dict[str, Any] | None = None, at: QPointF | None = None) -> list[str]:
        doc = doc if doc is not None else read_clipboard()
        if not doc or not doc.get("nodes"):
            return []
        target = at if at is not None else self.view._last_scene_pos
        ox, oy = fragment_origin(doc)
        command = cmd.AddFragmentCommand(self.graph, doc, (target.x() - ox, target.y() - oy))
        subgraphs = getattr(self.owner, "subgraph_actions", None)
        self.undo.beginMacro(command.text())
        if subgraphs is not None:
            subgraphs.add_missing_definitions(doc)
        self.undo.push(command)
        self.undo.endMacro()
        ids = list(command.new_ids.values())
        self.scene.select_nodes(ids)
        return ids

    def duplicate(self) -> list[str]:
        ids = self.scene.selected_node_ids()
        if not ids:
            return []
        doc = fragment(self.graph, ids)
        ox, oy = fragment_origin(doc)
        return self.paste(json.loads(json.dumps(doc)), QPointF(ox + 40, oy + 40))

    def delete_selection(self) -> None:
        ids = self.scene.selected_node_ids()
        wires = [w.link for w in self.scene.selected_wires() if w.link.dst not in ids and w.link.src not in ids]
        groups = self.scene.selected_group_ids()
        if not (ids or wires or groups):
            return
        self.undo.beginMacro("Delete")
        for lk in wires:
            self.undo.push(cmd.DisconnectCommand(self.graph, lk.dst, lk.dst_input))
        if ids:
            self.undo.push(cmd.RemoveNodesCommand(self.graph, ids))
        for gid in groups:
            self.undo.push(cmd.RemoveGroupCommand(self.graph, gid))
        self.undo.endMacro()

    def toggle_mode(self, mode: str) -> None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return
        target = "normal" if all(self.graph.node(n).mode == mode for n in ids) else mode
        self.undo.push(cmd.SetModeCommand(self.graph, ids, target))

    def toggle_collapse(self) -> None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return
        collapse = not all(self.graph.node(n).ui.get("collapsed") for n in ids)
        self.undo.beginMacro("Collapse" if collapse else "Expand")
        for nid in ids:
            self.undo.push(cmd.SetUiCommand(self.graph, nid, "collapsed", collapse))
        self.undo.endMacro()

    def rename_selected(self) -> None:
        ids = self.scene.selected_node_ids()
        groups = self.scene.selected_group_ids()
        if len(ids) == 1:
            node = self.graph.node(ids[0])
            text, ok = QInputDialog.getText(self.parent, "Rename node", "Title:", text=node.title or "")
            if ok:
                self.undo.push(cmd.SetTitleCommand(self.graph, ids[0], text or None))
        elif len(groups) == 1:
            g = self.graph.groups[groups[0]]
            text, ok = QInputDialog.getText(self.parent, "Rename group", "Title:", text=g.title)
            if ok and text:
                self.undo.push(cmd.UpdateGroupCommand(self.graph, g.id, title=text))

    def group_selection(self, title: str = "Group") -> str | None:
        ids = self.scene.selected_node_ids()
        if not ids:
            return None
        r = self.scene.nodes_rect(ids).adjusted(-20, -20 - GROUP_TITLE_H, 20, 20)
        command = cmd.AddGroupCommand(self.graph, title, (r.x(), r.y(), r.width(), r.height()))
        self.undo.push(command)
        return command.gid

    def align_selection(self, how: str) -> None:
        rects = {}
        for nid in self.scene.selected_node_ids():
            it = self.scene.node_items[nid]
            rects[nid] = it.mapRectToScene(0, 0, it.layout.width, it.layout.height)
        moves = align(rects, how)
        if moves:
            self.undo.push(cmd.MoveCommand(self.graph, moves, text=f"Align {how}"))

    def context_menu(self, pos: Any) -> None:
        """Right-click: node actions on a node (selecting it first), else "add node"."""
        item = self.view.node_at(pos)
        menu = QMenu(self.parent)
        if item is not None:
            if not item.isSelected():
                self.scene.select_nodes([item.node_id])
            for text, fn in (("Bypass", lambda: self.toggle_mode("bypass")), ("Mute", lambda: self.toggle_mode("mute")),
                             ("Collapse", self.toggle_collapse), ("Rename…", self.rename_selected),
                             ("Duplicate", self.duplicate), ("Group", lambda: self.group_selection()),
                             ("Delete", self.delete_selection)):
                menu.addAction(text).triggered.connect(lambda _=False, f=fn: f())
            subgraphs = getattr(self.owner, "subgraph_actions", None)
            if subgraphs is not None:
                subgraphs.context_items(menu, item.node_id)
            regions.context_items(menu, self.scene, item.node_id, self.parent)  # Edit Area…/Edit Mask…
        else:
            scene_pos = self.view.mapToScene(pos)
            menu.addAction("Add Node…").triggered.connect(lambda _=False: self.view.open_search(scene_pos))
            menu.addAction("Paste").triggered.connect(lambda _=False: self.paste(at=scene_pos))
            menu.addAction("Frame All").triggered.connect(lambda _=False: self.view.frame_all())
        menu.popup(self.view.viewport().mapToGlobal(pos))

    def focus_node(self, nid: str) -> None:
        if nid in self.scene.node_items:
            self.scene.select_nodes([nid])
            self.view.centerOn(self.scene.node_items[nid].sceneBoundingRect().center())
