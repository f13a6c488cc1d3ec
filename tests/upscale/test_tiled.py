"""Tiled upscaling: blending weights, full coverage, exactness within the receptive field,
out-of-memory fallback, progress and cancellation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.upscale.tiled import TileOutOfMemory, axis_weights, tile_starts, tiled_upscale, untiled
from tests.tolerance import assert_close

torch.set_num_threads(1)


def pointwise_x3(x: torch.Tensor) -> torch.Tensor:
    """A model whose output pixel depends only on its own input pixel: any tiling must be exact."""
    return F.interpolate(x * x + 0.1 * x, scale_factor=3, mode="nearest")


def conv_model(radius: int, seed: int = 0):
    """x2 model with receptive-field radius ``radius`` (stacked zero-padded 3x3 convs)."""
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(3, 3, 3, 3, generator=g) * 0.2 for _ in range(radius)]

    def model(x: torch.Tensor) -> torch.Tensor:
        for w in weights:
            x = torch.tanh(F.conv2d(x, w, padding=1))
        return F.interpolate(x, scale_factor=2, mode="nearest")

    return model


@pytest.mark.parametrize("blend", ["linear", "cosine"])
def test_neighbour_weights_sum_to_one_in_the_overlap(blend: str) -> None:
    overlap, scale, tile = 16, 2, 40
    left = axis_weights(tile * scale, False, True, overlap, scale, blend)  # a tile ending at an interior edge
    right = axis_weights(tile * scale, True, False, overlap, scale, blend)  # the next one, starting there
    band = overlap * scale
    total = left[-band:] + right[:band]
    assert_close(total, torch.ones(band), reduction=2)  # two weights (a cos each) added
    margin = (overlap // 4) * scale
    assert torch.all(right[:margin] == 0) and torch.all(left[-margin:] == 0)  # context only
    assert torch.all(right[band:] == 1) and torch.all(torch.diff(right[:band]) >= 0)  # monotone ramp


def test_tile_starts_cover_with_overlap() -> None:
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:], strict=False))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 50), w=st.integers(1, 50), tile=st.integers(4, 24), overlap=st.integers(0, 12),
       blend=st.sampled_from(["linear", "cosine"]))
def test_pointwise_model_is_exact_for_any_tiling(h: int, w: int, tile: int, overlap: int, blend: str) -> None:
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    overlap = min(overlap, tile - 1)
    out = tiled_upscale(x, pointwise_x3, 3, tile=tile, overlap=overlap, blend=blend)
    # A weighted mean (sum of weighted values, sum of weights, one division) of every tile covering a pixel.
    covering = math.ceil(tile / (tile - overlap)) ** 2
    assert_close(out, pointwise_x3(x), reduction=2 * covering)


def test_exact_when_receptive_field_fits_the_context_margin() -> None:
    model = conv_model(radius=3)
    x = torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(0))
    ref = untiled(x, model)
    out = tiled_upscale(x, model, 2, tile=32, overlap=12)  # margin 3 px == radius
    # 3 convs over 3 x 3x3 inputs, then a weighted mean of at most 4 tiles
    assert_close(out, ref, reduction=3 * 9, depth=3 + 1)
    # Control: without enough context the tile edges are visibly wrong, so the check above can fail.
    bad = tiled_upscale(x, model, 2, tile=32, overlap=4)  # margin 1 px < radius
    assert (bad - ref).abs().max().item() > 1e-2


def test_out_of_memory_falls_back_to_smaller_tiles() -> None:
    calls: list[int] = []

    def picky(x: torch.Tensor) -> torch.Tensor:
        calls.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return pointwise_x3(x)

    retries: list[int] = []
    progress: list[tuple[int, int]] = []
    x = torch.rand(2, 3, 40, 33, generator=torch.Generator().manual_seed(1))
    out = tiled_upscale(x, picky, 3, tile=64, overlap=8, min_tile=8, on_retry=lambda t, e: retries.append(t),
                        progress=lambda d, t: progress.append((d, t)))
    assert_close(out, pointwise_x3(x), reduction=2 * 4)  # 16px tiles, 8px overlap: a mean of <= 4 tiles
    assert retries == [32, 16]  # image 1 needed two halvings; image 2 reused the 16px tiles directly
    assert progress[-1][0] == progress[-1][1]  # ends at 100% after the restarts
    assert calls.count(40) == 1 and max(calls[2:]) <= 16

    def runtime_oom(x: torch.Tensor) -> torch.Tensor:  # older torch / CPU allocator wording
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")

    with pytest.raises(TileOutOfMemory, match="even with 32px tiles"):
        tiled_upscale(x, runtime_oom, 3, tile=64, overlap=8, min_tile=32)

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        tiled_upscale(x, broken, 3, tile=64, overlap=8)


def test_progress_and_cancellation() -> None:
    class Stop(Exception):
        pass

    seen: list[tuple[int, int]] = []

    def check() -> None:
        if len(seen) >= 3:
            raise Stop

    calls = []
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(Stop):
        tiled_upscale(x, lambda t: calls.append(1) or pointwise_x3(t), 3, tile=32, overlap=16,
                      progress=lambda d, t: seen.append((d, t)), check_cancelled=check)
    assert seen == [(1, 9), (2, 9), (3, 9)] and len(calls) == 3


def test_wrong_model_scale_is_reported() -> None:
    with pytest.raises(ValueError, match="scale 2"):
        tiled_upscale(torch.rand(1, 3, 8, 8), pointwise_x3, 2, tile=8, overlap=0)
