"""Image node specs (``image.*``).

This module must stay importable without torch: the catalogue and the
validator read these specs, so every node function imports :mod:`.ops` /
:mod:`.files` (which need torch, numpy, Pillow, OpenCV) only when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.fileio import atomic_write_bytes
from nodegraph.outputs import confined_path, prefix_preflight
from nodegraph.spec import (
    PATH_READ,
    PATH_WRITE,
    Bool,
    Combo,
    Estimate,
    Float,
    In,
    Int,
    NodeResult,
    Out,
    String,
    node,
)

from .constants import CROP_MODES, MASK_CHANNELS, MAX_RESOLUTION, SCALE_METHODS
from .inputs import file_fingerprint, list_input_images, resolve_image_path, resolve_input_name

PREVIEW_PREFIX = "_preview/preview"

# -- loading ---------------------------------------------------------------------------------------


def _load(path: Path, input_name: str) -> tuple[Any, Any]:
    from .files import ImageFileError, load_image_file

    try:
        return load_image_file(path)
    except ImageFileError as exc:
        raise NodeInputError(input_name, str(exc), "use a PNG, JPEG, WebP, BMP, GIF or TIFF file") from None


def _header_estimate(path: Path, input_name: str) -> dict[str, Estimate] | None:
    """Preflight for the loaders: the decoded size from the file's header (no pixels decoded), refused
    at validation when the frames x pixels are over the cap."""
    from .files import ImageFileError, check_decoded_size, image_header

    try:
        frames, h, w = image_header(path)
    except ImageFileError:
        return None  # damaged or not an image: the load reports it, with its own fix
    try:
        check_decoded_size(frames, h, w, str(path))
    except ImageFileError as exc:
        raise NodeInputError(input_name, str(exc), "use a smaller image, or fewer frames") from None
    return {"IMAGE": Estimate(frames * h * w * 12, shape=(frames, h, w), input=input_name),
            "MASK": Estimate(frames * h * w * 4, shape=(frames, h, w), input=input_name)}


def _load_preflight(values: Mapping[str, Any], upstream: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Estimate] | None:
    if "image" not in values:
        return None
    return _header_estimate(resolve_input_name(str(values["image"]), settings, "image"), "image")


def _path_preflight(values: Mapping[str, Any], upstream: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Estimate] | None:
    if "path" not in values:
        return None
    return _header_estimate(resolve_image_path(str(values["path"]), settings, "path"), "path")


def _input_fingerprint(values: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, int, int]:
    return file_fingerprint(resolve_input_name(str(values["image"]), settings, "image"), "image")


@node("image.load", category="image", display_name="Load Image",
      inputs=[Combo("image", list_input_images, tooltip="a file in the input folder (settings: input_dir)")],
      outputs=[Out("IMAGE", "IMAGE"), Out("MASK", "MASK", "1 where the image is transparent")],
      fingerprint=_input_fingerprint, preflight=_load_preflight)
def load_image(ctx: NodeContext, image: str) -> tuple[Any, Any]:
    """Load a picture from the input folder as IMAGE plus MASK (1 - alpha), EXIF-rotated upright.
    Animated files load as a batch of frames."""
    return _load(resolve_input_name(image, ctx.settings, "image"), "image")


def _path_fingerprint(values: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, int, int]:
    return file_fingerprint(resolve_image_path(str(values["path"]), settings, "path"), "path")


@node("image.load_path", category="image", display_name="Load Image (path)",
      inputs=[String("path", "", tooltip="absolute, or relative to the input folder, else to the current directory",
                     path=PATH_READ)],
      outputs=[Out("IMAGE", "IMAGE"), Out("MASK", "MASK", "1 where the image is transparent")],
      fingerprint=_path_fingerprint, preflight=_path_preflight)
def load_image_path(ctx: NodeContext, path: str) -> tuple[Any, Any]:
    """Load a picture from any path (for scripts and ``--set``); otherwise like Load Image."""
    return _load(resolve_image_path(path, ctx.settings, "path"), "path")


_MASK_LOAD_CHANNELS = ("alpha", "red", "green", "blue")  # ComfyUI's LoadImageMask order


def _mask_load_preflight(values: Mapping[str, Any], upstream: Mapping[str, Any],
                         settings: Mapping[str, Any]) -> dict[str, Estimate] | None:
    est = _load_preflight(values, upstream, settings)
    return None if est is None else {"MASK": est["MASK"]}


@node("image.load_mask", category="mask", display_name="Load Image (as Mask)",
      inputs=[Combo("image", list_input_images, tooltip="a file in the input folder (settings: input_dir)"),
              Combo("channel", list(_MASK_LOAD_CHANNELS), "alpha",
                    tooltip="alpha: 1 where the picture is transparent (what the mask editor paints); "
                            "a colour: that channel's brightness")],
      outputs=[Out("MASK", "MASK")], fingerprint=_input_fingerprint, preflight=_mask_load_preflight)
def load_image_mask(ctx: NodeContext, image: str, channel: str) -> Any:
    """A mask straight from a picture in the input folder (ComfyUI's Load Image Mask): ``1 - alpha``
    for channel alpha (an opaque picture gives an empty mask), else the colour channel, 0..1."""
    img, mask = _load(resolve_input_name(image, ctx.settings, "image"), "image")
    if channel == "alpha":
        return mask
    return img[..., ("red", "green", "blue").index(channel)].contiguous()


# -- saving / preview --------------------------------------------------------------------------------


def _files_exist(entry: Any) -> bool:
    paths = list(entry.files) or list(entry.ui.get("images", []))
    return bool(paths) and all(Path(p).is_file() for p in paths)


def _write_pngs(images: Any, path_for: Any, text: Mapping[str, str] | None, compress_level: int) -> list[str]:
    from .files import encode_png
    from .ops import to_uint8

    written = []
    for pixels in to_uint8(images):
        path = path_for()
        atomic_write_bytes(path, encode_png(pixels, text, compress_level=compress_level))
        written.append(str(path))
    return written


@node("image.save", category="image", display_name="Save Image",
      inputs=[In("images", "IMAGE"),
              String("filename_prefix", "nodegraph", tooltip="name inside the output folder; sub-folders allowed",
                     path=PATH_WRITE),
              Bool("embed_workflow", True, tooltip="store the workflow in the PNG so it can be loaded back")],
      output_node=True, cache_valid=_files_exist, preflight=prefix_preflight())
def save_image(ctx: NodeContext, images: Any, filename_prefix: str, embed_workflow: bool = True) -> NodeResult:
    """Write each image as ``<output>/<prefix>_NNNNN.png`` (atomically), with the workflow embedded
    as JSON in a ``workflow`` text chunk.  Re-running unchanged writes nothing new unless a file
    was deleted."""
    from .files import workflow_text

    confined_path(ctx.output_dir, filename_prefix, ".png")  # reject a bad prefix before any work
    text = {"workflow": workflow_text(ctx.workflow)} if embed_workflow and ctx.workflow is not None else None
    paths = _write_pngs(images, lambda: confined_path(ctx.output_dir, filename_prefix, ".png"), text, 4)
    return NodeResult(ui={"images": paths}, files=paths)


@node("image.preview", category="image", display_name="Preview Image",
      inputs=[In("images", "IMAGE")], output_node=True, cache_valid=_files_exist)
def preview_image(ctx: NodeContext, images: Any) -> NodeResult:
    """Show images on the node without saving them: they are written (fast, no metadata) to the
    ``_preview`` sub-folder of the output folder, listed in ``ui["images"]`` and not reported as
    outputs of the run.  The folder may be emptied at any time."""
    paths = _write_pngs(images, lambda: confined_path(ctx.output_dir, PREVIEW_PREFIX, ".png"), None, 1)
    return NodeResult(ui={"images": paths})


# -- transforms -------------------------------------------------------------------------------------


@node("image.scale", category="image/transform", display_name="Scale Image",
      inputs=[In("image", "IMAGE"),
              Combo("method", list(SCALE_METHODS), "bilinear"),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=8, tooltip="0 = keep aspect ratio from height"),
              Int("height", 512, min=0, max=MAX_RESOLUTION, step=8, tooltip="0 = keep aspect ratio from width"),
              Combo("crop", list(CROP_MODES), "disabled", tooltip="center: crop to the target aspect, no stretch")],
      outputs=[Out("IMAGE", "IMAGE")])
def scale_image(ctx: NodeContext, image: Any, method: str, width: int, height: int, crop: str) -> Any:
    """Resize to a given width and height."""
    from .ops import scale

    return scale(image, width, height, method, crop)


@node("image.scale_by", category="image/transform", display_name="Scale Image By",
      inputs=[In("image", "IMAGE"), Combo("method", list(SCALE_METHODS), "bilinear"),
              Float("factor", 1.0, min=0.01, max=16.0, step=0.01)],
      outputs=[Out("IMAGE", "IMAGE")])
def scale_image_by(ctx: NodeContext, image: Any, method: str, factor: float) -> Any:
    """Resize both sides by a factor."""
    from .ops import scale_by

    _, h, w, _ = image.shape
    if round(w * factor) > MAX_RESOLUTION or round(h * factor) > MAX_RESOLUTION:
        raise NodeInputError("factor", f"{w}x{h} scaled by {factor} exceeds {MAX_RESOLUTION} pixels",
                             "use a smaller factor")
    return scale_by(image, factor, method)


@node("image.scale_to_total_pixels", category="image/transform", display_name="Scale Image to Total Pixels",
      inputs=[In("image", "IMAGE"), Combo("method", list(SCALE_METHODS), "bilinear"),
              Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01, tooltip="1 megapixel = 1024 x 1024"),
              Int("resolution_steps", 1, min=1, max=256, tooltip="round both sides to a multiple of this")],
      outputs=[Out("IMAGE", "IMAGE")])
def scale_to_total_pixels(ctx: NodeContext, image: Any, method: str, megapixels: float,
                          resolution_steps: int = 1) -> Any:
    """Resize, keeping the aspect ratio, to about ``megapixels`` x 1024 x 1024 pixels: the size a
    model was trained at, whatever the input's size (as ComfyUI's ImageScaleToTotalPixels)."""
    import math

    from .ops import resize

    _, h, w, _ = image.shape
    factor = math.sqrt(int(megapixels * 1024 * 1024) / (w * h))
    width = max(resolution_steps, round(w * factor / resolution_steps) * resolution_steps)
    height = max(resolution_steps, round(h * factor / resolution_steps) * resolution_steps)
    if width > MAX_RESOLUTION or height > MAX_RESOLUTION:
        raise NodeInputError("megapixels", f"{w}x{h} at {megapixels} megapixels would be {width}x{height}, over "
                             f"{MAX_RESOLUTION} pixels a side", "use fewer megapixels")
    return resize(image, width, height, method)


@node("image.crop", category="image/transform", display_name="Crop Image",
      inputs=[In("image", "IMAGE"), Int("width", 512, min=1, max=MAX_RESOLUTION),
              Int("height", 512, min=1, max=MAX_RESOLUTION), Int("x", 0, min=0, max=MAX_RESOLUTION),
              Int("y", 0, min=0, max=MAX_RESOLUTION)],
      outputs=[Out("IMAGE", "IMAGE")])
def crop_image(ctx: NodeContext, image: Any, width: int, height: int, x: int, y: int) -> Any:
    """Cut out a rectangle (clipped to the image)."""
    from .ops import crop

    _, h, w, _ = image.shape
    if x >= w:
        raise NodeInputError("x", f"x={x} is outside the {w}px wide image", f"use x < {w}")
    if y >= h:
        raise NodeInputError("y", f"y={y} is outside the {h}px high image", f"use y < {h}")
    return crop(image, x, y, width, height)


@node("image.pad_for_outpaint", category="image/transform", display_name="Pad Image for Outpainting",
      inputs=[In("image", "IMAGE"),
              Int("left", 0, min=0, max=MAX_RESOLUTION, step=8), Int("top", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("right", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("feathering", 40, min=0, max=MAX_RESOLUTION, tooltip="soft mask band inside the old edges")],
      outputs=[Out("IMAGE", "IMAGE"), Out("MASK", "MASK", "1 on the new area (fading into the old image)")])
def pad_for_outpaint(ctx: NodeContext, image: Any, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[Any, Any]:
    """Extend the canvas with grey and a mask of the new area, ready for an inpainting sampler."""
    from .ops import pad_for_outpaint as pad

    return pad(image, left, top, right, bottom, feathering)


@node("image.composite", category="image/transform", display_name="Composite Images",
      inputs=[In("destination", "IMAGE"), In("source", "IMAGE"),
              Int("x", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION), Int("y", 0, min=-MAX_RESOLUTION,
                                                                       max=MAX_RESOLUTION),
              In("mask", "MASK", optional=True, tooltip="where to take the source (1) vs keep the destination")],
      outputs=[Out("IMAGE", "IMAGE")])
def composite_images(ctx: NodeContext, destination: Any, source: Any, x: int, y: int, mask: Any = None) -> Any:
    """Paste the source onto the destination at (x, y), optionally through a soft mask."""
    from .ops import composite

    return composite(destination, source, x, y, mask)


@node("image.batch", category="image", display_name="Batch Images",
      inputs=[In("image1", "IMAGE"), In("image2", "IMAGE")], outputs=[Out("IMAGE", "IMAGE")])
def batch_images(ctx: NodeContext, image1: Any, image2: Any) -> Any:
    """Join two batches into one (image2 is resized to image1's size if they differ)."""
    from .ops import batch

    return batch([image1, image2])


@node("image.invert", category="image", display_name="Invert Image",
      inputs=[In("image", "IMAGE")], outputs=[Out("IMAGE", "IMAGE")])
def invert_image(ctx: NodeContext, image: Any) -> Any:
    """Photographic negative (1 - x); alpha is kept."""
    from .ops import invert

    return invert(image)


# -- masks ------------------------------------------------------------------------------------------


@node("image.to_mask", category="mask", display_name="Image to Mask",
      inputs=[In("image", "IMAGE"), Combo("channel", list(MASK_CHANNELS), "red")], outputs=[Out("MASK", "MASK")])
def image_to_mask(ctx: NodeContext, image: Any, channel: str) -> Any:
    """Use one channel of an image as a mask (e.g. a black-and-white painted mask)."""
    from .ops import image_to_mask as to_mask

    if MASK_CHANNELS.index(channel) >= image.shape[-1]:
        raise NodeInputError("channel", f"the image has only {image.shape[-1]} channels (no {channel})",
                             "pick red, green or blue")
    return to_mask(image, channel)


@node("image.mask_to_image", category="mask", display_name="Mask to Image",
      inputs=[In("mask", "MASK")], outputs=[Out("IMAGE", "IMAGE")])
def mask_to_image(ctx: NodeContext, mask: Any) -> Any:
    """Show or process a mask as a grey image."""
    from .ops import mask_to_image as to_image

    return to_image(mask)


@node("image.invert_mask", category="mask", display_name="Invert Mask",
      inputs=[In("mask", "MASK")], outputs=[Out("MASK", "MASK")])
def invert_mask(ctx: NodeContext, mask: Any) -> Any:
    """Swap the area to repaint and the area to keep."""
    from .ops import invert_mask as inv

    return inv(mask)


@node("image.grow_mask", category="mask", display_name="Grow Mask",
      inputs=[In("mask", "MASK"), Int("expand", 0, min=-1024, max=1024, tooltip="pixels; negative shrinks"),
              Bool("tapered_corners", True, tooltip="round the corners instead of keeping them square")],
      outputs=[Out("MASK", "MASK")])
def grow_mask(ctx: NodeContext, mask: Any, expand: int, tapered_corners: bool) -> Any:
    """Dilate (or erode) a mask by whole pixels, e.g. to repaint a margin around an object."""
    from .ops import grow_mask as grow

    return grow(mask, expand, tapered_corners)


@node("image.blur_mask", category="mask", display_name="Blur Mask",
      inputs=[In("mask", "MASK"), Float("sigma", 4.0, min=0.0, max=256.0, step=0.1, tooltip="pixels")],
      outputs=[Out("MASK", "MASK")])
def blur_mask(ctx: NodeContext, mask: Any, sigma: float) -> Any:
    """Soften a mask's edges with a Gaussian blur so inpainting blends in."""
    from .ops import blur_mask as blur

    return blur(mask, sigma)


# -- preprocessors ------------------------------------------------------------------------------------


@node("image.canny", category="image/preprocessors", display_name="Canny Edges",
      inputs=[In("image", "IMAGE"), Int("low_threshold", 100, min=0, max=1000),
              Int("high_threshold", 200, min=0, max=1000)],
      outputs=[Out("IMAGE", "IMAGE")])
def canny_edges(ctx: NodeContext, image: Any, low_threshold: int, high_threshold: int) -> Any:
    """Edge map (white on black) for a Canny ControlNet, via OpenCV."""
    from .ops import canny

    if low_threshold > high_threshold:
        raise NodeInputError("low_threshold", f"low ({low_threshold}) is above high ({high_threshold})",
                             "make low_threshold <= high_threshold")
    return canny(image, low_threshold, high_threshold)


NODES = [
    load_image, load_image_path, load_image_mask, save_image, preview_image,
    scale_image, scale_image_by, scale_to_total_pixels, crop_image, pad_for_outpaint, composite_images,
    batch_images, invert_image,
    image_to_mask, mask_to_image, invert_mask, grow_mask, blur_mask,
    canny_edges,
]
