"""ComfyUI UI-format workflows with subgraphs, written in the frontend's schema (workflow 0.4 at the
top with array links; ``definitions.subgraphs`` entries are version-1 graphs with object links, an
``inputNode``/``outputNode`` pair (ids -10/-20), ``inputs``/``outputs`` slots carrying ``linkIds``;
instances are nodes whose ``type`` is the definition's UUID).

The pipeline: a checkpoint loader outside, two instances of "Text to image" (UUID ``T2I``) each
feeding a Save Image.  "Text to image" takes model/clip/vae plus a promoted ``text`` widget and
holds a nested "Negative prompt" subgraph (UUID ``NEG``).  Quirks from ComfyUI's issue threads are
on purpose: ``proxyWidgets`` saved as a JSON string with a seed promoted from an inner node (its
``widgets_values`` then carry a ``control_after_generate`` after the seed), a second instance with no
``proxyWidgets`` (values only for the widget input), a nested definition either in the root's list
(ComfyUI's way) or inside the definition that uses it, and inner widgets whose values live on the
shared definition.
"""

from __future__ import annotations

import copy
from typing import Any

T2I = "8d3b6e7c-0f5a-4f5e-9c1e-1f3a2b4c5d6e"
NEG = "2c1f7a9e-6b3d-4e8f-a1b2-c3d4e5f60718"
DEMO = "nodegraph-shapes-v1.safetensors"


def _node(nid: int, cls: str, widgets: list | None = None, *, inputs: list | None = None,
          outputs: list | None = None, mode: int = 0, properties: dict | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"id": nid, "type": cls, "pos": [100 * nid, 100], "size": [300, 120], "flags": {},
                            "order": nid, "mode": mode, "inputs": inputs or [], "outputs": outputs or [],
                            "properties": {"Node name for S&R": cls, **(properties or {})}}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def _in(name: str, t: str, link: int | None, widget: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "localized_name": name, "type": t, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def _out(name: str, t: str, links: list[int]) -> dict[str, Any]:
    return {"name": name, "localized_name": name, "type": t, "links": links}


def _link(lid: int, src: int, sslot: int, dst: int, dslot: int, t: str) -> dict[str, Any]:
    return {"id": lid, "origin_id": src, "origin_slot": sslot, "target_id": dst, "target_slot": dslot, "type": t}


def _io(uid: str, name: str, t: str, link_ids: list[int]) -> dict[str, Any]:
    return {"id": uid, "name": name, "type": t, "linkIds": link_ids, "localized_name": name,
            "pos": {"0": 0, "1": 0}}


def _definition(uid: str, name: str, inputs: list, outputs: list, nodes: list, links: list) -> dict[str, Any]:
    return {"id": uid, "version": 1, "revision": 0, "name": name, "config": {},
            "state": {"lastGroupId": 0, "lastNodeId": 20, "lastLinkId": 40, "lastRerouteId": 0},
            "inputNode": {"id": -10, "bounding": [0, 0, 120, 100]},
            "outputNode": {"id": -20, "bounding": [900, 0, 120, 60]},
            "inputs": inputs, "outputs": outputs, "widgets": [], "nodes": nodes, "groups": [], "links": links,
            "extra": {}}


def negative_definition() -> dict[str, Any]:
    nodes = [_node(1, "CLIPTextEncode", ["blurry"], inputs=[_in("clip", "CLIP", 31)],
                   outputs=[_out("CONDITIONING", "CONDITIONING", [32])])]
    links = [_link(31, -10, 0, 1, 0, "CLIP"), _link(32, 1, 0, -20, 0, "CONDITIONING")]
    return _definition(NEG, "Negative prompt", [_io("a0000000-0000-4000-8000-000000000001", "clip", "CLIP", [31])],
                       [_io("a0000000-0000-4000-8000-000000000002", "CONDITIONING", "CONDITIONING", [32])],
                       nodes, links)


def t2i_definition() -> dict[str, Any]:
    nodes = [
        _node(5, "EmptyLatentImage", [64, 64, 1], outputs=[_out("LATENT", "LATENT", [19])]),
        _node(6, "CLIPTextEncode", ["text stored on the shared inner widget"],
              inputs=[_in("clip", "CLIP", 12), _in("text", "STRING", 16, widget=True)],
              outputs=[_out("CONDITIONING", "CONDITIONING", [18])]),
        _node(7, NEG, inputs=[_in("clip", "CLIP", 13)], outputs=[_out("CONDITIONING", "CONDITIONING", [17])]),
        _node(3, "KSampler", [42, "randomize", 4, 5, "euler", "normal", 1],
              inputs=[_in("model", "MODEL", 11), _in("positive", "CONDITIONING", 18),
                      _in("negative", "CONDITIONING", 17), _in("latent_image", "LATENT", 19)],
              outputs=[_out("LATENT", "LATENT", [21])]),
        _node(8, "VAEDecode", inputs=[_in("samples", "LATENT", 21), _in("vae", "VAE", 14)],
              outputs=[_out("IMAGE", "IMAGE", [20])]),
    ]
    links = [
        _link(11, -10, 0, 3, 0, "MODEL"), _link(12, -10, 1, 6, 0, "CLIP"), _link(13, -10, 1, 7, 0, "CLIP"),
        _link(14, -10, 2, 8, 1, "VAE"), _link(16, -10, 3, 6, 1, "STRING"), _link(17, 7, 0, 3, 2, "CONDITIONING"),
        _link(18, 6, 0, 3, 1, "CONDITIONING"), _link(19, 5, 0, 3, 3, "LATENT"), _link(21, 3, 0, 8, 0, "LATENT"),
        _link(20, 8, 0, -20, 0, "IMAGE"),
    ]
    inputs = [_io("b0000000-0000-4000-8000-000000000001", "model", "MODEL", [11]),
              _io("b0000000-0000-4000-8000-000000000002", "clip", "CLIP", [12, 13]),
              _io("b0000000-0000-4000-8000-000000000003", "vae", "VAE", [14]),
              _io("b0000000-0000-4000-8000-000000000004", "text", "STRING", [16])]
    outputs = [_io("b0000000-0000-4000-8000-000000000005", "IMAGE", "IMAGE", [20])]
    return _definition(T2I, "Text to image", inputs, outputs, nodes, links)


def _instance(nid: int, links_in: tuple[int, int, int], link_out: int, widgets: list,
              proxy: str | None) -> dict[str, Any]:
    props = {"proxyWidgets": proxy} if proxy is not None else {}
    node = _node(nid, T2I, widgets, properties=props,
                 inputs=[_in("model", "MODEL", links_in[0]), _in("clip", "CLIP", links_in[1]),
                         _in("vae", "VAE", links_in[2]), _in("text", "STRING", None, widget=True)],
                 outputs=[_out("IMAGE", "IMAGE", [link_out])])
    del node["properties"]["Node name for S&R"]
    return node


def workflow(*, nested_in_root: bool = True) -> dict[str, Any]:
    """The whole UI-format document."""
    nodes = [
        _node(4, "CheckpointLoaderSimple", [DEMO],
              outputs=[_out("MODEL", "MODEL", [1, 5]), _out("CLIP", "CLIP", [2, 6]), _out("VAE", "VAE", [3, 7])]),
        _instance(10, (1, 2, 3), 4, ["a red circle on a blue background", 7, "fixed"],
                  '[["-1", "text"], ["3", "seed"]]'),
        _instance(11, (5, 6, 7), 8, ["a blue square"], None),
        _node(9, "SaveImage", ["sg_a"], inputs=[_in("images", "IMAGE", 4)]),
        _node(12, "SaveImage", ["sg_b"], inputs=[_in("images", "IMAGE", 8)]),
    ]
    links = [[1, 4, 0, 10, 0, "MODEL"], [2, 4, 1, 10, 1, "CLIP"], [3, 4, 2, 10, 2, "VAE"], [4, 10, 0, 9, 0, "IMAGE"],
             [5, 4, 0, 11, 0, "MODEL"], [6, 4, 1, 11, 1, "CLIP"], [7, 4, 2, 11, 2, "VAE"],
             [8, 11, 0, 12, 0, "IMAGE"]]
    t2i, neg = t2i_definition(), negative_definition()
    if nested_in_root:
        subgraphs = [t2i, neg]
    else:
        t2i["definitions"] = {"subgraphs": [neg]}
        subgraphs = [t2i]
    return {"id": "c0ffee00-0000-4000-8000-000000000000", "revision": 0, "last_node_id": 12, "last_link_id": 8,
            "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1, "offset": [0, 0]}, "frontendVersion": "1.28.0"},
            "version": 0.4, "definitions": {"subgraphs": copy.deepcopy(subgraphs)}}
