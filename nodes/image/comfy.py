"""How the image pack's nodes correspond to ComfyUI classes (registered with the pack).

Rows list ComfyUI's inputs in its declaration order (the order of the UI
format's positional ``widgets_values``) and outputs by ComfyUI slot.
"""

from __future__ import annotations

from types import MappingProxyType

from nodegraph.comfy.mapping import ComfyMappings, L, NodeMap, W

# ComfyUI's "nearest-exact" is what our image ops call "nearest" (torch's nearest-exact).
_METHODS = MappingProxyType({"nearest-exact": "nearest"})
_CANNY = ("Canny thresholds converted from ComfyUI's 0-1 scale to OpenCV's 0-255: edges are close to "
          "ComfyUI's, not identical")

MAPS: tuple[NodeMap, ...] = (
    NodeMap("LoadImage", "image.load", (W("image", kind="image"),), ("IMAGE", "MASK"), ui_widgets=("upload",)),
    NodeMap("LoadImageMask", "image.load_mask", (W("image", kind="image"), W("channel")), ("MASK",),
            ui_widgets=("upload",)),
    NodeMap("SaveImage", "image.save", (L("images"), W("filename_prefix"))),
    NodeMap("PreviewImage", "image.preview", (L("images"),)),
    NodeMap("ImageScale", "image.scale",
            (L("image"), W("upscale_method", "method", values=_METHODS), W("width"), W("height"), W("crop")),
            ("IMAGE",)),
    NodeMap("ImageScaleBy", "image.scale_by",
            (L("image"), W("upscale_method", "method", values=_METHODS), W("scale_by", "factor")),
            ("IMAGE",)),
    NodeMap("ImagePadForOutpaint", "image.pad_for_outpaint",
            (L("image"), W("left"), W("top"), W("right"), W("bottom"), W("feathering")), ("IMAGE", "MASK")),
    NodeMap("ImageCrop", "image.crop", (L("image"), W("width"), W("height"), W("x"), W("y")), ("IMAGE",)),
    NodeMap("ImageInvert", "image.invert", (L("image"),), ("IMAGE",)),
    NodeMap("ImageBatch", "image.batch", (L("image1"), L("image2")), ("IMAGE",)),
    NodeMap("ImageToMask", "image.to_mask", (L("image"), W("channel")), ("MASK",)),
    NodeMap("MaskToImage", "image.mask_to_image", (L("mask"),), ("IMAGE",)),
    NodeMap("InvertMask", "image.invert_mask", (L("mask"),), ("MASK",)),
    NodeMap("GrowMask", "image.grow_mask", (L("mask"), W("expand"), W("tapered_corners")), ("MASK",)),
    NodeMap("ImageScaleToTotalPixels", "image.scale_to_total_pixels",
            (L("image"), W("upscale_method", "method", values=_METHODS), W("megapixels"), W("resolution_steps")),
            ("IMAGE",)),
    # ComfyUI's Canny (kornia) takes thresholds on 0..1 gradients, ours (OpenCV) on 0..255.
    NodeMap("Canny", "image.canny", (L("image"), W("low_threshold", factor=255, factor_note=_CANNY),
                                     W("high_threshold", factor=255, factor_note=_CANNY)), ("IMAGE",)),
)

COMFY = ComfyMappings(maps=MAPS)
