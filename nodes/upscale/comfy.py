"""How the upscale pack's nodes correspond to ComfyUI classes (registered with the pack)."""

from __future__ import annotations

from nodegraph.comfy.mapping import ComfyMappings, L, NodeMap, W

MAPS: tuple[NodeMap, ...] = (
    NodeMap("UpscaleModelLoader", "upscale.load_model",
            (W("model_name", kind="model:upscale_models"),), ("UPSCALE_MODEL",)),
    NodeMap("ImageUpscaleWithModel", "upscale.image_with_model", (L("upscale_model"), L("image")), ("IMAGE",)),
)

COMFY = ComfyMappings(maps=MAPS)
