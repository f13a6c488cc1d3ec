"""VAE decode/encode nodes (plain and tiled) and inpainting encode."""

from __future__ import annotations

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import In, Int, Out, node

from . import estimates as est


def _threads(ctx: NodeContext, vae, images, scale: int = 1):  # noqa: ANN001, ANN202
    """Threads for a VAE pass over ``images`` (N, C, H, W) whose pixels are ``scale`` x larger."""
    from .common import cpu_threads

    return cpu_threads(ctx, [vae.vae], images.shape[0] * images.shape[-2] * images.shape[-1] * scale * scale)


def _need(vae, name: str = "vae") -> None:  # noqa: ANN001
    if vae is None:
        raise NodeInputError(name, "no VAE (the checkpoint has none)", "load one with Load VAE and connect it")


def _fits(samples, vae) -> None:  # noqa: ANN001
    """Latents from one family cannot be decoded by another family's VAE (4 vs 16 channels)."""
    c = samples.samples.shape[1]
    if c != vae.latent_channels:
        families = {4: "SD1/SD2/SDXL", 16: "FLUX, SD3 or Z-Image"}
        what = f" (a {families[vae.latent_channels]} VAE)" if vae.latent_channels in families else ""
        made = f" ({families[c]} latents)" if c in families else ""
        need = " (FLUX and Z-Image: ae.safetensors; SD3: its 16-channel VAE)" if c == 16 else ""
        raise NodeInputError("vae", f"this VAE decodes {vae.latent_channels}-channel latents{what} but the samples "
                             f"have {c} channels{made}: they come from a model of another family",
                             f"connect the VAE that belongs to the model that made the latents{need}")


@node("diffusion.vae_decode", category="latent", display_name="VAE Decode",
      inputs=[In("samples", "LATENT"), In("vae", "VAE")], outputs=[Out("IMAGE", "IMAGE")], preflight=est.vae_decode)
def vae_decode(ctx: NodeContext, samples, vae):  # noqa: ANN001, ANN201
    """Latents to pixels."""
    _need(vae)
    _fits(samples, vae)
    with _threads(ctx, vae, samples.samples, vae.downscale):
        return vae.decode(vae.in_own_scaling(samples))


@node("diffusion.vae_decode_tiled", category="latent", display_name="VAE Decode (Tiled)",
      inputs=[In("samples", "LATENT"), In("vae", "VAE"),
              Int("tile_size", 512, min=64, max=4096, step=32, tooltip="tile size in pixels"),
              Int("overlap", 64, min=0, max=4096, step=32, tooltip="overlap in pixels")],
      outputs=[Out("IMAGE", "IMAGE")], preflight=est.vae_decode)
def vae_decode_tiled(ctx: NodeContext, samples, vae, tile_size: int, overlap: int):  # noqa: ANN001, ANN201
    """Decode in overlapping tiles to bound memory on large images."""
    _need(vae)
    _fits(samples, vae)
    f = vae.downscale
    if overlap >= tile_size:
        raise NodeInputError("overlap", "overlap must be smaller than the tile", "lower overlap")
    with _threads(ctx, vae, samples.samples, f):
        return vae.decode(vae.in_own_scaling(samples), tile=max(1, tile_size // f), overlap=overlap // f)


@node("diffusion.vae_encode", category="latent", display_name="VAE Encode",
      inputs=[In("pixels", "IMAGE"), In("vae", "VAE")], outputs=[Out("LATENT", "LATENT")], preflight=est.vae_encode)
def vae_encode(ctx: NodeContext, pixels, vae):  # noqa: ANN001, ANN201
    """Pixels to latents (for img2img)."""
    from ..runtime import Latent

    _need(vae)
    with _threads(ctx, vae, pixels.movedim(-1, 1)):
        return Latent(vae.encode(pixels), downscale=vae.downscale, scaling=vae.guessed_scaling)


@node("diffusion.vae_encode_tiled", category="latent", display_name="VAE Encode (Tiled)",
      inputs=[In("pixels", "IMAGE"), In("vae", "VAE"), Int("tile_size", 512, min=64, max=4096, step=64),
              Int("overlap", 64, min=0, max=4096, step=32)],
      outputs=[Out("LATENT", "LATENT")], preflight=est.vae_encode)
def vae_encode_tiled(ctx: NodeContext, pixels, vae, tile_size: int, overlap: int):  # noqa: ANN001, ANN201
    """Encode in overlapping tiles to bound memory on large images."""
    from ..runtime import Latent

    _need(vae)
    if overlap >= tile_size:
        raise NodeInputError("overlap", "overlap must be smaller than the tile", "lower overlap")
    with _threads(ctx, vae, pixels.movedim(-1, 1)):
        return Latent(vae.encode(pixels, tile=tile_size, overlap=overlap), downscale=vae.downscale,
                      scaling=vae.guessed_scaling)


@node("diffusion.vae_encode_for_inpaint", category="latent/inpaint", display_name="VAE Encode (for Inpainting)",
      inputs=[In("pixels", "IMAGE"), In("vae", "VAE"), In("mask", "MASK"),
              Int("grow_mask_by", 6, min=0, max=64, tooltip="pixels to grow the mask by, for seamless edges")],
      outputs=[Out("LATENT", "LATENT")], preflight=est.vae_encode)
def vae_encode_for_inpaint(ctx: NodeContext, pixels, vae, mask, grow_mask_by: int):  # noqa: ANN001, ANN201
    """Encode with the masked area neutral grey and attach the (grown) mask as the noise mask,
    so the sampler repaints only there."""
    import torch.nn.functional as F

    from ..runtime import Latent

    _need(vae)
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    if m.shape[-2:] != pixels.shape[1:3]:
        m = F.interpolate(m[:, None], size=pixels.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
    if grow_mask_by > 0:
        k = grow_mask_by * 2 + 1
        m = F.max_pool2d(m[:, None], kernel_size=k, stride=1, padding=grow_mask_by)[:, 0]
    m = m.clamp(0, 1)
    keep = (1 - m.round())[..., None]
    grey = pixels[..., :3] * keep + 0.5 * (1 - keep)
    with _threads(ctx, vae, pixels.movedim(-1, 1)):
        return Latent(vae.encode(grey), noise_mask=m, downscale=vae.downscale, scaling=vae.guessed_scaling)


NODES = [vae_decode, vae_decode_tiled, vae_encode, vae_encode_tiled, vae_encode_for_inpaint]
