"""Extra input channels of inpainting and control models (ComfyUI's ``concat_cond``).

Some models take more input channels than they predict: the noisy latent is
concatenated (after the sampler's input scaling) with an image the model is
conditioned on.  This module builds that extra input, with ComfyUI's meaning
(comfy/model_base.py ``BaseModel.concat_cond`` and ``Flux.concat_cond``):

* SD1/SD2/SDXL inpainting UNets (in 9 = 4 latent + 1 mask + 4 masked-image latent):
  ``[mask, masked image latent]``.  The mask is the conditioning's ``concat_mask``
  (InpaintModelConditioning) or else the latent's noise mask, resized to the
  latent (bilinear) and rounded; the image is the conditioning's
  ``concat_latent`` or else the sampler's input latent (VAE Encode for
  Inpainting's grey-filled encode).  With no mask at all: mask 1 everywhere and
  the latent of a black image (ComfyUI's constants), i.e. "repaint everything".
* SD1/SDXL InstructPix2Pix UNets (in 8 = 4 latent + 4 image latent): ``[image latent]``,
  the conditioning's ``concat_latent`` as the VAE made it, *unscaled* (ComfyUI's
  ``process_ip2p_image_in`` is the identity for these models; diffusers' pipeline
  concatenates ``latent_dist.mode()``), zeros when none is given.
* FLUX Fill (img_in 384 = 4 x (16 + 16 + 64)): ``[masked image latent, mask]``
  where the mask is kept at pixel resolution and folded 8 x 8 into 64 channels
  (pixel-unshuffle), not rounded.
* FLUX Canny/Depth (img_in 128 = 4 x (16 + 16)): ``[control image latent]``
  (InstructPixToPixConditioning); zeros in model space when none is given.

Area entries get the matching crop of this input (composite.Region does it), as
in ComfyUI where ``c_concat`` is cropped with the noise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

#: ComfyUI's latent of an all-black SD image ("zero in pixel space translated to latent space"),
#: used as the masked image of a 9-channel inpainting UNet that gets no mask.
SD_BLANK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


class InpaintInputError(ValueError):
    """A model's extra input channels that nodegraph cannot fill; blames the model."""

    blame = "model"
    fix = "use an inpainting model (9 input channels) or an ordinary one with a noise mask"


class ConcatImageMismatch(ValueError):
    """The image attached to a prompt was encoded by a VAE of another family (wrong channel count);
    blames the prompt input."""

    fix = "encode the image with this model's VAE (connect it to the Inpaint Model Conditioning node)"


def _check_channels(image: torch.Tensor, channels: int, what: str) -> None:
    if image.ndim != 4 or image.shape[1] != channels:
        raise ConcatImageMismatch(f"the image latent attached to the prompt (Inpaint Model Conditioning / "
                                  f"InstructPixToPix Conditioning) has shape {tuple(image.shape)}, but this {what} "
                                  f"takes a {channels}-channel latent")


def resize_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """ComfyUI's ``resize_to_batch_size``: repeat/drop items evenly so there are ``batch`` of them."""
    n = t.shape[0]
    if n == batch:
        return t
    if batch <= 1:
        return t[:batch]
    if batch < n:
        scale = (n - 1) / (batch - 1)
        idx = [min(round(i * scale), n - 1) for i in range(batch)]
    else:
        scale = n / batch
        idx = [min(math.floor((i + 0.5) * scale), n - 1) for i in range(batch)]
    return t[idx]


def resize_center(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """ComfyUI's ``common_upscale(t, w, h, "bilinear", "center")``: crop to the target aspect, then
    resize bilinearly (``[B, C, H, W]``)."""
    if tuple(t.shape[-2:]) == (h, w):
        return t
    old_h, old_w = t.shape[-2], t.shape[-1]
    old_aspect, new_aspect = old_w / old_h, w / h
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    s = t.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    return F.interpolate(s, size=(h, w), mode="bilinear")


def as_mask4d(mask: torch.Tensor) -> torch.Tensor:
    """A MASK (``[H, W]``, ``[B, H, W]`` or ``[B, C, H, W]``) as ``[B, 1, H, W]`` float (first channel)."""
    m = mask.float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    elif m.ndim == 4:
        m = m[:, :1]
    else:
        raise ValueError(f"an inpainting mask must be [H, W] or [B, H, W], got shape {tuple(mask.shape)}")
    return m


def in_scaling(z: torch.Tensor, scaling: tuple[float, float] | None,
               target: tuple[float, float] | None) -> torch.Tensor:
    """Latents ``z`` made with VAE (scale, shift) ``scaling`` re-expressed in ``target``'s."""
    if scaling is None or target is None or tuple(scaling) == tuple(target):
        return z
    (s, b), (s2, b2) = scaling, target
    return (z / s + b - b2) * s2


def unet_concat(cond: Any, *, concat_channels: int, latent_channels: int, batch: int, h: int, w: int,
                scaling: tuple[float, float] | None, latent_image: torch.Tensor | None = None,
                denoise_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The extra input of a 9-channel inpainting UNet (``[batch, 1 + C, h, w]``: mask, masked latent) or
    of an 8-channel InstructPix2Pix UNet (``[batch, C, h, w]``: the image latent)."""
    if concat_channels == latent_channels:
        return ip2p_concat(cond, latent_channels=latent_channels, batch=batch, h=h, w=w, scaling=scaling)
    if concat_channels != latent_channels + 1:
        raise InpaintInputError(
            f"this UNet takes {latent_channels + concat_channels} input channels ({concat_channels} beyond the "
            f"{latent_channels}-channel latent); nodegraph samples inpainting UNets ({latent_channels + 1} extra: "
            f"mask + masked image) and InstructPix2Pix UNets ({latent_channels} extra), not this kind")
    mask = cond.concat_mask if cond.concat_mask is not None else denoise_mask
    if mask is None:
        blank = torch.zeros(batch, latent_channels, h, w)
        if latent_channels == len(SD_BLANK_LATENT):
            blank += torch.tensor(SD_BLANK_LATENT)[None, :, None, None]
        return torch.cat([torch.ones(batch, 1, h, w), blank], dim=1)
    if cond.concat_latent is not None:
        _check_channels(cond.concat_latent, latent_channels, "inpainting UNet")
        image = in_scaling(cond.concat_latent.float(), cond.concat_scaling, scaling)
    elif latent_image is not None:
        image = latent_image.float().cpu()
    else:
        image = torch.zeros(batch, latent_channels, h, w)
    image = resize_to_batch(resize_center(image, h, w), batch)
    m = resize_to_batch(resize_center(as_mask4d(mask).cpu(), h, w).round(), batch)
    return torch.cat([m, image], dim=1)


def ip2p_concat(cond: Any, *, latent_channels: int, batch: int, h: int, w: int,
                scaling: tuple[float, float] | None) -> torch.Tensor:
    """An InstructPix2Pix UNet's extra input: the image latent of InstructPixToPix Conditioning in the
    VAE's own (unscaled) units, resized to the latent; zeros without one (ComfyUI's ``IP2P.concat_cond``)."""
    if cond.concat_latent is None:
        return torch.zeros(batch, latent_channels, h, w)
    _check_channels(cond.concat_latent, latent_channels, "InstructPix2Pix UNet")
    scale, shift = cond.concat_scaling or scaling or (1.0, 0.0)
    raw = cond.concat_latent.float().cpu() / scale + shift
    return resize_to_batch(resize_center(raw, h, w), batch)


def flux_concat(cond: Any, *, concat_channels: int, latent_channels: int, batch: int, h: int, w: int,
                scaling: tuple[float, float], denoise_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The extra input of FLUX Canny/Depth (``[control latent]``) or Fill (``[masked latent, mask]``)."""
    if cond.concat_latent is not None:
        _check_channels(cond.concat_latent, latent_channels, "FLUX model")
        image = in_scaling(cond.concat_latent.float(), cond.concat_scaling, scaling)
    else:  # ComfyUI: process_latent_in(zeros), the model-space value of a zero latent
        image = torch.full((batch, latent_channels, h, w), (0.0 - scaling[1]) * scaling[0])
    image = resize_to_batch(resize_center(image, h, w), batch)
    if concat_channels == latent_channels:
        return image
    mask_channels = concat_channels - latent_channels
    f = math.isqrt(mask_channels)
    if f * f != mask_channels:
        raise InpaintInputError(f"this FLUX model takes {concat_channels} extra input channels, which is neither "
                                f"a control image ({latent_channels}) nor an image plus a folded mask")
    mask = cond.concat_mask if cond.concat_mask is not None else denoise_mask
    m = torch.ones(batch, 1, h, w) if mask is None else as_mask4d(mask).cpu()
    m = resize_center(m.mean(dim=1, keepdim=True), h * f, w * f)
    b = m.shape[0]
    m = m.view(b, h, f, w, f).permute(0, 2, 4, 1, 3).reshape(b, f * f, h, w)
    return torch.cat([image, resize_to_batch(m, batch)], dim=1)
