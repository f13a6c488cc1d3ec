"""Preflight estimates for latents and decoded images (see ``NodeSpec.preflight``).

A latent's estimate carries the pixel size it stands for, ``shape=(batch,
height, width)``, so the size survives any chain of upscales and samplers
and the VAE decode at the end can say what the image will cost.  The VAE is
not known at planning time, so sizes use the largest factor of the families
we load: at most 1 byte of latent per pixel (4 channels at 1/4, or 16
channels at 1/8, in float32), and a decode that holds ~3 float32 activations
of 128 channels per pixel at full resolution.  Estimates only ever refuse
what could not fit; they are not a memory model.

Where it is known, a LATENT estimate's ``value`` is ``{"latent_channels": n}`` (Empty SD3
Latent Image: 16; Empty Latent Image: its VAE's, else SD's 4) and a VAE's is
``{"latent_channels": n, "what": "'name' is …"}`` (Load VAE, from the file's header), so
VAE Decode refuses at validation a VAE of another family than the latent's (an SD VAE on a
FLUX / SD3 / Z-Image latent), naming its ``vae`` input, the file and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodegraph.spec import Estimate

LATENT_BYTES_PER_PIXEL = 1
IMAGE_BYTES_PER_PIXEL = 3 * 4  # IMAGE is float32 RGB
DECODE_WORK_PER_PIXEL = 3 * 128 * 4
ENCODE_WORK_PER_PIXEL = DECODE_WORK_PER_PIXEL


def latent(batch: int, height: int, width: int, *, input: str, fix: str, info: Any = None) -> Estimate:
    pixels = batch * height * width
    return Estimate(pixels * LATENT_BYTES_PER_PIXEL, shape=(batch, height, width), value=info, input=input, fix=fix)


def _channels(est: Estimate | None) -> int | None:
    value = est.value if est is not None else None
    return value.get("latent_channels") if isinstance(value, dict) else None


def _shape(upstream: Mapping[str, Estimate | None], name: str) -> tuple[int, int, int] | None:
    est = upstream.get(name)
    if est is None or est.shape is None or len(est.shape) != 3:
        return None
    return est.shape  # type: ignore[return-value]


def empty_latent(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate]:
    b, h, w = int(values.get("batch_size", 1)), int(values.get("height", 512)), int(values.get("width", 512))
    channels = _channels(upstream.get("vae")) if "vae" in upstream else 4
    return {"LATENT": latent(b, h, w, input="batch_size",
                             fix="lower width, height or batch_size (or run the batch in several runs)",
                             info={"latent_channels": channels} if channels else None)}


def empty_sd3_latent(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate]:
    """Empty SD3 Latent Image: always 16 channels at 1/8."""
    b, h, w = int(values.get("batch_size", 1)), int(values.get("height", 1024)), int(values.get("width", 1024))
    return {"LATENT": latent(b, h, w, input="batch_size",
                             fix="lower width, height or batch_size (or run the batch in several runs)",
                             info={"latent_channels": 16})}


def vae_file(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None],
             settings: Mapping[str, Any]) -> dict[str, Estimate] | None:
    """Load VAE: the latent channels of the file, from its header (None when it cannot be told)."""
    from nodegraph.errors import NodeInputError

    from ..split_files import identify_file
    from .common import resolve_model

    name = values.get("vae_name")
    try:
        identity = identify_file(resolve_model(settings, "vae", str(name), "vae_name"))
    except (NodeInputError, OSError, ValueError):  # missing or unreadable: the fingerprint check reports it
        return None
    channels = identity.info.get("latent_channels") if identity is not None and identity.kind == "vae" else None
    if not channels:
        return None
    return {"VAE": Estimate(0, value={"latent_channels": channels, "what": f"{name!r} is {identity.description}"})}


def latent_upscale_by(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    shape = _shape(upstream, "samples")
    if shape is None:
        return None
    b, h, w = shape
    s = float(values.get("scale_by", 1.0))
    return {"LATENT": latent(b, max(1, round(h * s)), max(1, round(w * s)), input="scale_by",
                             fix="lower scale_by (each upscale in a chain multiplies the size again)",
                             info=upstream["samples"].value)}


def latent_upscale(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    shape = _shape(upstream, "samples")
    if shape is None:
        return None
    b, h, w = shape
    tw, th = int(values.get("width", 0)), int(values.get("height", 0))
    info = upstream["samples"].value
    if tw == 0 and th == 0:
        return {"LATENT": latent(b, h, w, input="width", fix="", info=info)}
    nw = tw or max(1, round(w * th / h))
    nh = th or max(1, round(h * tw / w))
    return {"LATENT": latent(b, nh, nw, input="width", fix="lower width and height", info=info)}


def same_latent(name: str, *outputs: str) -> Any:
    """A hook for nodes whose LATENT outputs have the size of input ``name`` (samplers, masks)."""

    def preflight(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
        est = upstream.get(name)
        return {out: est for out in outputs} if est is not None else None

    return preflight


def _vae_fits(upstream: Mapping[str, Estimate | None]) -> None:
    """Refuse a VAE whose latent channels differ from the latent's (both known at planning)."""
    from nodegraph.errors import NodeInputError

    have, need = _channels(upstream.get("vae")), _channels(upstream.get("samples"))
    if have is None or need is None or have == need:
        return
    families = {4: "SD1/SD2/SDXL", 16: "FLUX, SD3 or Z-Image"}
    what = upstream["vae"].value.get("what", "this VAE")  # type: ignore[union-attr]
    raise NodeInputError("vae", f"{what}, but the samples have {need} channels ({families.get(need, 'another')} "
                         "latents)", "load the VAE of the model that made the latents"
                         + (" (FLUX and Z-Image: ae.safetensors; SD3: its 16-channel VAE)" if need == 16 else ""))


def vae_decode(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    _vae_fits(upstream)
    shape = _shape(upstream, "samples")
    if shape is None:
        return None
    b, h, w = shape
    tile = values.get("tile_size")
    work_pixels = b * h * w if tile is None else min(h * w, int(tile) ** 2)
    return {"IMAGE": Estimate(b * h * w * IMAGE_BYTES_PER_PIXEL, work=work_pixels * DECODE_WORK_PER_PIXEL,
                              shape=(b, h, w), input="samples",
                              fix="decode a smaller latent: lower the size or the upscale before this node"
                                  + ("" if tile is not None else ", or use VAE Decode (Tiled)"))}


def vae_encode(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    shape = _shape(upstream, "pixels")
    if shape is None:
        return None
    b, h, w = shape
    tile = values.get("tile_size")
    work_pixels = b * h * w if tile is None else min(h * w, int(tile) ** 2)
    channels = _channels(upstream.get("vae"))
    est = latent(b, h, w, input="pixels", fix="scale the image down before encoding it",
                 info={"latent_channels": channels} if channels else None)
    return {"LATENT": Estimate(est.bytes, work=work_pixels * ENCODE_WORK_PER_PIXEL, shape=est.shape, value=est.value,
                               input="pixels", fix=est.fix)}
