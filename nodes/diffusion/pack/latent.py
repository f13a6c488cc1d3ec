"""Latent creation and manipulation."""

from __future__ import annotations

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, Float, In, Int, Out, node

from . import estimates as est
from .common import MAX_RESOLUTION

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic"]


@node("diffusion.empty_latent", category="latent", display_name="Empty Latent Image",
      inputs=[Int("width", 512, min=16, max=MAX_RESOLUTION, step=8),
              Int("height", 512, min=16, max=MAX_RESOLUTION, step=8),
              Int("batch_size", 1, min=1, max=4096),
              In("vae", "VAE", optional=True,
                 tooltip="size the latent for this VAE (channels, downscale); without it: SD's 4 channels, 1/8")],
      outputs=[Out("LATENT", "LATENT")], preflight=est.empty_latent)
def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int, vae=None):  # noqa: ANN001, ANN201
    """Blank latents for text-to-image; the sampler adds the seeded noise."""
    import torch

    from ..runtime import Latent

    channels, f = (vae.latent_channels, vae.downscale) if vae is not None else (4, 8)
    if width % f or height % f:
        raise NodeInputError("width" if width % f else "height",
                             f"{width}x{height} is not a multiple of the VAE's factor {f}",
                             f"use a multiple of {f}")
    return Latent(torch.zeros(batch_size, channels, height // f, width // f), downscale=f)


def _resize(samples, width: int, height: int, method: str, crop: str):  # noqa: ANN001, ANN202
    import torch.nn.functional as F

    if crop == "center":
        h, w = samples.shape[-2:]
        target = width / height
        if w / h > target:
            nw = round(h * target)
            x0 = (w - nw) // 2
            samples = samples[..., :, x0:x0 + nw]
        elif w / h < target:
            nh = round(w / target)
            y0 = (h - nh) // 2
            samples = samples[..., y0:y0 + nh, :]
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(samples, size=(height, width), mode=method, **kwargs)


@node("diffusion.latent_upscale", category="latent", display_name="Upscale Latent",
      inputs=[In("samples", "LATENT"), Combo("upscale_method", UPSCALE_METHODS, "nearest-exact"),
              Int("width", 1024, min=0, max=MAX_RESOLUTION, step=8,
                  tooltip="target size in pixels; 0 keeps the aspect ratio from the other side"),
              Int("height", 1024, min=0, max=MAX_RESOLUTION, step=8),
              Combo("crop", ["disabled", "center"], "disabled")],
      outputs=[Out("LATENT", "LATENT")], preflight=est.latent_upscale)
def latent_upscale(ctx: NodeContext, samples, upscale_method: str, width: int, height: int,  # noqa: ANN001, ANN201
                   crop: str):
    """Resize latents to a pixel size (the first half of a hires-fix)."""
    from dataclasses import replace

    downscale = samples.downscale
    h, w = samples.samples.shape[-2:]
    if width == 0 and height == 0:
        return samples
    lw = width // downscale if width else round(w * (height / downscale) / h)
    lh = height // downscale if height else round(h * (width / downscale) / w)
    if lw < 1 or lh < 1:
        raise NodeInputError("width", "target size is smaller than one latent cell", "increase width/height")
    return replace(samples, samples=_resize(samples.samples, lw, lh, upscale_method, crop))


@node("diffusion.latent_upscale_by", category="latent", display_name="Upscale Latent By",
      inputs=[In("samples", "LATENT"), Combo("upscale_method", UPSCALE_METHODS, "nearest-exact"),
              Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01)],
      outputs=[Out("LATENT", "LATENT")], preflight=est.latent_upscale_by)
def latent_upscale_by(ctx: NodeContext, samples, upscale_method: str, scale_by: float):  # noqa: ANN001, ANN201
    """Resize latents by a factor."""
    from dataclasses import replace

    h, w = samples.samples.shape[-2:]
    return replace(samples, samples=_resize(samples.samples, max(1, round(w * scale_by)),
                                            max(1, round(h * scale_by)), upscale_method, "disabled"))


@node("diffusion.set_latent_noise_mask", category="latent/inpaint", display_name="Set Latent Noise Mask",
      inputs=[In("samples", "LATENT"), In("mask", "MASK")], outputs=[Out("LATENT", "LATENT")],
      preflight=est.same_latent("samples", "LATENT"))
def set_latent_noise_mask(ctx: NodeContext, samples, mask):  # noqa: ANN001, ANN201
    """Only repaint where the mask is 1; elsewhere the sampler keeps the input latent."""
    from dataclasses import replace

    return replace(samples, noise_mask=mask.float())


NODES = [empty_latent, latent_upscale, latent_upscale_by, set_latent_noise_mask]
