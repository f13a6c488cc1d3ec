"""The editor names no pack's node types: the reroute it inserts and the node a dropped picture becomes
are looked up in the registry (the nodes packs map ComfyUI's ``Reroute`` and ``LoadImage`` onto), so a
third-party pack's nodes take those roles, and without them nothing breaks."""

from __future__ import annotations

from PySide6.QtCore import QPointF

from gui.canvas.scene import GraphScene
from gui.canvas.view import GraphView
from gui.image_import import load_image_node
from nodegraph import Combo, Graph, In, Out, Registry, node
from nodegraph.comfy import ComfyMappings, NodeMap, W
from nodegraph.comfy.mapping import Reroute


@node("acme.make", category="acme", display_name="Make", inputs=[], outputs=[Out("IMAGE", "IMAGE")])
def make(ctx) -> object:
    return None


@node("acme.take", category="acme", display_name="Take", inputs=[In("image", "IMAGE")], outputs=[],
      output_node=True)
def take(ctx, image: object) -> None:
    return None


@node("acme.dot", category="acme", display_name="Dot", inputs=[In("through", "*")], outputs=[Out("onward", "*")])
def dot(ctx, through: object) -> object:
    return through


def _registry(with_reroute: bool) -> Registry:
    reg = Registry()
    reg.add_pack("acme", [make, take, dot],
                 comfy=ComfyMappings(reroute=Reroute("acme.dot", "through", "onward") if with_reroute else None))
    return reg


def _graph() -> Graph:
    g = Graph()
    g.add_node("acme.make", {}, id="m", ui={"pos": [0, 0]})
    g.add_node("acme.take", {}, id="t", ui={"pos": [400, 0]})
    g.connect("m", "IMAGE", "t", "image")
    return g


def test_a_packs_own_pass_through_node_is_the_reroute(qtbot) -> None:
    scene = GraphScene(_registry(with_reroute=True))
    view = GraphView(scene)
    qtbot.addWidget(view)
    scene.set_graph(_graph())
    rid = view.insert_reroute(scene.wires[("t", "image")], QPointF(200, 0))
    g = scene.graph
    assert rid is not None and g.node(rid).type == "acme.dot"
    assert g.link_into(rid, "through").src == "m" and g.link_into("t", "image").src == rid
    assert scene.node_items[rid].is_reroute  # drawn as a dot
    assert scene.output_type(rid, "onward") == "IMAGE"  # carries what feeds it
    scene.undo_stack.undo()  # one undo step removes it and restores the wire
    assert rid not in g and g.link_into("t", "image").src == "m"


def test_without_a_registered_reroute_double_click_inserts_nothing(qtbot) -> None:
    scene = GraphScene(_registry(with_reroute=False))
    view = GraphView(scene)
    qtbot.addWidget(view)
    scene.set_graph(_graph())
    assert scene.reroute is None
    assert view.insert_reroute(scene.wires[("t", "image")], QPointF(200, 0)) is None
    assert len(scene.graph) == 2 and not scene.is_reroute("acme.dot")


@node("acme.picture", category="acme", display_name="Picture", inputs=[Combo("file", ["a.png"])],
      outputs=[Out("IMAGE", "IMAGE")])
def picture(ctx, file: str) -> object:
    return None


def test_dropped_pictures_become_the_node_a_pack_maps_loadimage_onto() -> None:
    reg = Registry()
    reg.add_pack("acme", [picture], comfy=ComfyMappings(maps=(
        NodeMap("LoadImage", "acme.picture", (W("image", "file", kind="image"),), ("IMAGE",)),)))
    assert load_image_node(reg) == ("acme.picture", "file")
    assert load_image_node(_registry(with_reroute=True)) is None  # no pack maps LoadImage
