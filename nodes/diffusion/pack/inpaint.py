"""Conditioning for inpainting and image-conditioned models (ComfyUI's InpaintModelConditioning and
InstructPixToPixConditioning).

Both attach an encoded image (and, for inpainting, the mask) to every entry of
both prompts; the model turns them into its extra input channels at each call
(see ``nodes.diffusion.inpaint``).  Models without extra channels ignore them,
as in ComfyUI -- with ``noise_mask`` on, InpaintModelConditioning still inpaints
an ordinary model through the latent's noise mask.
"""

from __future__ import annotations

from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Bool, In, Out, node

from . import estimates as est


def _pixels(pixels: Any, name: str = "pixels") -> Any:
    if pixels.ndim != 4:
        raise NodeInputError(name, f"expected an IMAGE [B, H, W, C], got shape {tuple(pixels.shape)}",
                             "connect an image output")
    return pixels[..., :3]


def _crop_to_vae(pixels: Any, f: int) -> tuple[Any, int, int]:
    """ComfyUI: crop centrally to a multiple of the VAE factor; returns (pixels, y offset, x offset)."""
    h, w = pixels.shape[1] // f * f, pixels.shape[2] // f * f
    if (h, w) == tuple(pixels.shape[1:3]):
        return pixels, 0, 0
    y0, x0 = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
    return pixels[:, y0:y0 + h, x0:x0 + w], y0, x0


def _latent_estimate(values: Any, upstream: Any) -> Any:
    """The encode's memory/work estimate, on the ``latent`` output."""
    out = est.vae_encode(values, upstream)
    return None if out is None else {"latent": out["LATENT"]}


def _attach(cond: Any, **values: Any) -> Any:
    from dataclasses import replace

    from ..runtime import map_entries

    return map_entries(cond, lambda c: replace(c, **values))


@node("diffusion.inpaint_model_conditioning", category="conditioning/inpaint",
      display_name="Inpaint Model Conditioning",
      inputs=[In("positive", "CONDITIONING"), In("negative", "CONDITIONING"), In("vae", "VAE"),
              In("pixels", "IMAGE"), In("mask", "MASK", tooltip="1 = repaint; resized to the image if it differs"),
              Bool("noise_mask", True, tooltip="also repaint only inside the mask (sampler keeps the rest); "
                   "off = an inpainting model repaints the whole image, guided by the masked image")],
      outputs=[Out("positive", "CONDITIONING"), Out("negative", "CONDITIONING"), Out("latent", "LATENT")],
      preflight=_latent_estimate)
def inpaint_model_conditioning(ctx: NodeContext, positive: Any, negative: Any, vae: Any, pixels: Any, mask: Any,
                               noise_mask: bool) -> tuple[Any, Any, Any]:
    """Prepare an inpainting model: the image with the masked area grey, encoded, plus the mask go
    with both prompts (what 9-channel inpaint UNets and FLUX Fill take); the latent is the whole
    image encoded, with the mask as its noise mask if ``noise_mask``."""
    import torch
    import torch.nn.functional as F

    from ..runtime import Latent
    from .vae import _need, _threads

    _need(vae)
    px = _pixels(pixels)
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise NodeInputError("mask", f"expected a MASK [H, W] or [B, H, W], got shape {tuple(mask.shape)}",
                             "connect a mask output")
    if m.shape[0] not in (1, px.shape[0]):
        raise NodeInputError("mask", f"{m.shape[0]} masks for {px.shape[0]} images",
                             "give one mask, or one per image")
    # ComfyUI: the mask is resized to the image (bilinear), then both are cropped to the VAE's factor.
    m = F.interpolate(m[:, None], size=tuple(px.shape[1:3]), mode="bilinear")
    f = vae.downscale
    px, y0, x0 = _crop_to_vae(px, f)
    m = m[:, :, y0:y0 + px.shape[1], x0:x0 + px.shape[2]]
    keep = (1.0 - m.round())[:, 0, :, :, None]
    grey = (px - 0.5) * keep + 0.5
    with _threads(ctx, vae, px.movedim(-1, 1)), torch.inference_mode():
        concat = vae.encode(grey)
        samples = vae.encode(px)
    values = {"concat_latent": concat, "concat_mask": m, "concat_scaling": vae.guessed_scaling}
    latent = Latent(samples, noise_mask=m[:, 0] if noise_mask else None, downscale=f, scaling=vae.guessed_scaling)
    return _attach(positive, **values), _attach(negative, **values), latent


@node("diffusion.instruct_pix2pix_conditioning", category="conditioning/instructpix2pix",
      display_name="InstructPixToPix Conditioning",
      inputs=[In("positive", "CONDITIONING"), In("negative", "CONDITIONING"), In("vae", "VAE"),
              In("pixels", "IMAGE", tooltip="the image to edit (InstructPix2Pix) or the control map "
                                            "(FLUX Canny/Depth: the edge or depth map)")],
      outputs=[Out("positive", "CONDITIONING"), Out("negative", "CONDITIONING"), Out("latent", "LATENT")],
      preflight=_latent_estimate)
def instruct_pix2pix_conditioning(ctx: NodeContext, positive: Any, negative: Any, vae: Any,
                                  pixels: Any) -> tuple[Any, Any, Any]:
    """Attach an encoded image to both prompts for models that take it as extra input channels
    (InstructPix2Pix UNets: the picture to edit; FLUX Canny/Depth: the control map); the latent is an
    empty one of the image's size."""
    import torch

    from ..runtime import Latent
    from .vae import _need, _threads

    _need(vae)
    px, _, _ = _crop_to_vae(_pixels(pixels), vae.downscale)
    with _threads(ctx, vae, px.movedim(-1, 1)), torch.inference_mode():
        concat = vae.encode(px)
    values = {"concat_latent": concat, "concat_scaling": vae.guessed_scaling}
    latent = Latent(torch.zeros_like(concat), downscale=vae.downscale, scaling=vae.guessed_scaling)
    return _attach(positive, **values), _attach(negative, **values), latent


NODES = [inpaint_model_conditioning, instruct_pix2pix_conditioning]
