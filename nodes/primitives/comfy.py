"""How the primitives pack's nodes correspond to ComfyUI (registered with the pack).

ComfyUI's backend primitive nodes map onto ours; its frontend-only
``PrimitiveNode`` is folded away by the importer.  Our reroute stands for
ComfyUI's frontend-only ``Reroute``, and our Seed node (no ComfyUI class) is
folded into the widgets it feeds on export.
"""

from __future__ import annotations

from nodegraph.comfy.mapping import ComfyMappings, L, NodeMap, Reroute, W

MAPS: tuple[NodeMap, ...] = (
    NodeMap("PrimitiveInt", "primitives.int", (W("value", seed=True),), ("INT",)),
    NodeMap("PrimitiveFloat", "primitives.float", (W("value"),), ("FLOAT",)),
    NodeMap("PrimitiveString", "primitives.string", (W("value"),), ("STRING",)),
    NodeMap("PrimitiveStringMultiline", "primitives.string", (W("value"),), ("STRING",)),
    NodeMap("PrimitiveBoolean", "primitives.bool", (W("value"),), ("BOOLEAN",)),
    # -- text and display
    NodeMap("StringReplace", "primitives.replace", (W("string", "text"), W("find"), W("replace")), ("STRING",)),
    NodeMap("PreviewAny", "primitives.show", (L("source", "value"),)),
)

COMFY = ComfyMappings(maps=MAPS, reroute=Reroute("primitives.reroute", "input", "output"),
                      constants=("primitives.seed",))
