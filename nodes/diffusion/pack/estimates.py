"""Preflight estimates for latents and decoded images (see ``NodeSpec.preflight``).

A latent's estimate carries the pixel size it stands for, ``shape=(batch,
height, width)``, so the size survives any chain of upscales and samplers
and the VAE decode at the end can say what the image will cost.  The VAE is
not known at planning time, so sizes use the largest factor of the families
we load: at most 1 byte of latent per pixel (4 channels at 1/4, or 16
channels at 1/8, in float32), and a decode that holds ~3 float32 activations
of 128 channels per pixel at full resolution.  Estimates only ever refuse
what could not fit; they are not a memory model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodegraph.spec import Estimate

LATENT_BYTES_PER_PIXEL = 1
IMAGE_BYTES_PER_PIXEL = 3 * 4  # IMAGE is float32 RGB
DECODE_WORK_PER_PIXEL = 3 * 128 * 4
ENCODE_WORK_PER_PIXEL = DECODE_WORK_PER_PIXEL


def latent(batch: int, height: int, width: int, *, input: str, fix: str) -> Estimate:
    pixels = batch * height * width
    return Estimate(pixels * LATENT_BYTES_PER_PIXEL, shape=(batch, height, width), input=input, fix=fix)


def _shape(upstream: Mapping[str, Estimate | None], name: str) -> tuple[int, int, int] | None:
    est = upstream.get(name)
    if est is None or est.shape is None or len(est.shape) != 3:
        return None
    return est.shape  # type: ignore[return-value]


def empty_latent(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate]:
    b, h, w = int(values.get("batch_size", 1)), int(values.get("height", 512)), int(values.get("width", 512))
    return {"LATENT": latent(b, h, w, input="batch_size",
                             fix="lower width, height or batch_size (or run the batch in several runs)")}


def latent_upscale_by(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    shape = _shape(upstream, "samples")
    if shape is None:
        return None
    b, h, w = shape
    s = float(values.get("scale_by", 1.0))
    return {"LATENT": latent(b, max(1, round(h * s)), max(1, round(w * s)), input="scale_by",
                             fix="lower scale_by (each upscale in a chain multiplies the size again)")}


def latent_upscale(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    shape = _shape(upstream, "samples")
    if shape is None:
        return None
    b, h, w = shape
    tw, th = int(values.get("width", 0)), int(values.get("height", 0))
    if tw == 0 and th == 0:
        return {"LATENT": latent(b, h, w, input="width", fix="")}
    nw = tw or max(1, round(w * th / h))
    nh = th or max(1, round(h * tw / w))
    return {"LATENT": latent(b, nh, nw, input="width", fix="lower width and height")}


def same_latent(name: str, *outputs: str) -> Any:
    """A hook for nodes whose LATENT outputs have the size of input ``name`` (samplers, masks)."""

    def preflight(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
        est = upstream.get(name)
        return {out: est for out in outputs} if est is not None else None

    return preflight


def vae_decode(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
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
    est = latent(b, h, w, input="pixels", fix="scale the image down before encoding it")
    return {"LATENT": Estimate(est.bytes, work=work_pixels * ENCODE_WORK_PER_PIXEL, shape=est.shape,
                               input="pixels", fix=est.fix)}
