"""Tiled, memory-bounded application of an image-to-image model (e.g. a 4x upscaler).

Super-resolution networks need memory proportional to the image area (times
a large feature count), so big images are processed in overlapping tiles, one
at a time, and the results are blended.  How the blending works, and why it
is seam-free:

* Neighbouring tiles share ``overlap`` input pixels.  Inside that shared band
  each tile's weight ramps from 0 to 1 (linear or cosine), and the weights of
  all tiles covering a pixel are normalised to sum to 1, so there is no hard
  edge anywhere.
* The outer quarter of the band next to a tile's *interior* edge gets weight
  exactly 0.  Those pixels serve only as context: a convolution near a tile
  edge sees zero padding instead of the real neighbours, so its output there is
  wrong and must not be used.  If the model's receptive-field radius is at most
  ``overlap // 4`` input pixels, the tiled result equals the untiled one up to
  float rounding; for larger receptive fields (real ESRGANs) the error is
  confined to where the weight is small, which is what hides seams.
* Tile edges lying on the image border are treated as the untiled model would
  see them (zero-padded), with full weight.

If a tile runs out of memory, the image is restarted with tiles half as large
(down to ``min_tile``) instead of failing the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

BLEND_MODES = ("cosine", "linear")

ProgressFn = Callable[[int, int], None]


class TileOutOfMemory(RuntimeError):
    """Even the smallest allowed tile did not fit in memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the ways torch reports exhausted memory (CUDA, MPS, CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()[:300]
        return "out of memory" in msg or "can't allocate memory" in msg
    return False


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with at least
    ``overlap`` shared pixels between neighbours; the last tile ends at ``size``."""
    if tile <= 0 or overlap < 0:
        raise ValueError(f"tile must be > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [0]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({tile})")
    stride = tile - overlap
    return [*range(0, size - tile, stride), size - tile]


def edge_ramp(length: int, margin: int, ramp: int, blend: str) -> torch.Tensor:
    """Weights for the ``length`` pixels next to an interior tile edge (index 0 at the edge):
    0 for the first ``margin`` pixels, then rising to 1 over ``ramp`` pixels, then 1."""
    if blend not in BLEND_MODES:
        raise ValueError(f"unknown blend {blend!r}; expected one of {BLEND_MODES}")
    i = torch.arange(length, dtype=torch.float64)
    if ramp <= 0:
        u = (i >= margin).to(torch.float64)
    else:
        u = ((i - margin + 0.5) / ramp).clamp(0.0, 1.0)
    if blend == "cosine":
        u = 0.5 - 0.5 * torch.cos(math.pi * u)
    return u.to(torch.float32)


def axis_weights(length: int, interior_start: bool, interior_end: bool, overlap: int, scale: int,
                 blend: str) -> torch.Tensor:
    """1-D weights along one axis of an upscaled tile (``length`` output pixels)."""
    w = torch.ones(length, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin = (overlap // 4) * scale
    ramp = overlap * scale - 2 * margin
    r = edge_ramp(length, margin, ramp, blend)
    if interior_start:
        w = w * r
    if interior_end:
        w = w * r.flip(0)
    return w


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def _upscale_one(x: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor], scale: int, tile: int,
                 overlap: int, blend: str, device: torch.device | str | None, dtype: torch.dtype | None,
                 step: Callable[[], None]) -> torch.Tensor:
    """One image ``[1,C,H,W]`` through ``model`` tile by tile; returns ``[1,C',H*s,W*s]`` float32 on CPU."""
    _, _, h, w = x.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    acc: torch.Tensor | None = None
    wsum = torch.zeros((h * scale, w * scale), dtype=torch.float32)
    for y0 in ys:
        wy = axis_weights(th * scale, y0 > 0, y0 + th < h, overlap, scale, blend)
        for x0 in xs:
            piece = x[:, :, y0:y0 + th, x0:x0 + tw]
            if device is not None or dtype is not None:
                piece = piece.to(device=device, dtype=dtype)
            out = model(piece)
            expected = (th * scale, tw * scale)
            if out.ndim != 4 or tuple(out.shape[-2:]) != expected:
                raise ValueError(f"model returned shape {tuple(out.shape)} for a {th}x{tw} tile; expected "
                                 f"[1, C, {expected[0]}, {expected[1]}] (scale {scale})")
            out = out.to("cpu", torch.float32)
            if acc is None:
                acc = torch.zeros((1, out.shape[1], h * scale, w * scale), dtype=torch.float32)
            wx = axis_weights(tw * scale, x0 > 0, x0 + tw < w, overlap, scale, blend)
            wt = wy[:, None] * wx[None, :]
            oy, ox = y0 * scale, x0 * scale
            acc[:, :, oy:oy + th * scale, ox:ox + tw * scale] += out * wt
            wsum[oy:oy + th * scale, ox:ox + tw * scale] += wt
            del out, piece
            step()
    assert acc is not None
    return acc / wsum.clamp_min(1e-12)


def tiled_upscale(
    image: torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    scale: int,
    *,
    tile: int = 512,
    overlap: int = 32,
    blend: str = "cosine",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: ProgressFn | None = None,
    check_cancelled: Callable[[], None] | None = None,
    min_tile: int = 32,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> torch.Tensor:
    """Apply ``model`` (``[1,C,h,w] -> [1,C',h*scale,w*scale]``) to ``image`` ``[B,C,H,W]`` in tiles.

    Each tile is moved to ``device``/``dtype`` before the call and its result
    back to float32 CPU, so accelerator memory holds one tile at a time.
    ``progress(done, total)`` is called after every tile and
    ``check_cancelled()`` before every tile (it should raise to stop).  On out
    of memory the current image restarts with half the tile size (and at most
    half as much overlap); ``on_retry(new_tile, exc)`` is told, and
    :class:`TileOutOfMemory` is raised once tiles would drop below
    ``min_tile``.  Returns ``[B,C',H*scale,W*scale]`` float32 on CPU.
    """
    if image.ndim != 4:
        raise ValueError(f"expected an image batch [B,C,H,W], got shape {tuple(image.shape)}")
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if blend not in BLEND_MODES:
        raise ValueError(f"unknown blend {blend!r}; expected one of {BLEND_MODES}")
    b, _, h, w = image.shape
    overlap = min(overlap, max(0, tile - 1))
    results: list[torch.Tensor] = []
    done = 0

    def tiles_per_image(t: int, o: int) -> int:
        return len(tile_starts(h, t, o)) * len(tile_starts(w, t, o))

    total = b * tiles_per_image(tile, overlap)

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        if check_cancelled is not None:
            check_cancelled()

    # no_grad rather than inference_mode: the result must stay an ordinary tensor that
    # downstream nodes may modify in place.
    with torch.no_grad():
        for i in range(b):
            while True:
                start_done = done
                try:
                    if check_cancelled is not None:
                        check_cancelled()
                    results.append(_upscale_one(image[i:i + 1], model, int(scale), tile, overlap, blend, device,
                                                dtype, step))
                    break
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    _free_accelerator_memory()
                    new_tile = tile // 2
                    if new_tile < min_tile:
                        raise TileOutOfMemory(f"out of memory even with {tile}px tiles; free memory or use a "
                                              f"smaller image") from exc
                    tile, overlap = new_tile, min(overlap, new_tile // 2)
                    done = start_done
                    total = done + (b - i) * tiles_per_image(tile, overlap)
                    if on_retry is not None:
                        on_retry(tile, exc)
    return torch.cat(results, dim=0)


def untiled(image: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Reference: the whole batch, image by image, in one call each (for tests and tiny images)."""
    with torch.no_grad():
        return torch.cat([model(image[i:i + 1]).float() for i in range(image.shape[0])], dim=0)


__all__ = ["BLEND_MODES", "TileOutOfMemory", "axis_weights", "edge_ramp", "is_out_of_memory",
                          "tile_starts", "tiled_upscale", "untiled"]
