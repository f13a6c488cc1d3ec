"""Several conditioning entries per prompt: ComfyUI's per-step blend of area/mask/strength entries.

Each side of classifier-free guidance (positive, negative) is a list of
:class:`Region` s.  At every step, for each side, every entry whose timestep
window contains the current sigma predicts x0 over its area (a crop of the
latent, or all of it); the prediction is weighted by ``mask * mask_strength *
strength`` (areas without a mask are feathered linearly over their inner
``min(8, side // 4)`` cells on every edge that is not the image border), the
weighted predictions are summed into the latent and divided by the summed
weights.  A cell no active entry covers gets 0, as in ComfyUI.  These are the
semantics of ComfyUI's ``calc_cond_batch`` (comfy/samplers.py).

Cost: entries whose crops and model inputs have the same shapes (and the same
ControlNets) run as one batched model call, positive and negative together,
so N same-shaped regional prompts cost one call of batch 2N per step instead
of 2N calls (at most ``MAX_BATCH`` entries per call; see bench/conditioning.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .model_sampling import Denoiser

#: ComfyUI's area feather width, in latent cells (capped at a quarter of the area's side).
FEATHER = 8
#: Most entries one model call takes: 4x the batch of a plain CFG step, so many regional entries
#: cannot multiply peak activation memory without bound (ComfyUI sizes this from free memory).
MAX_BATCH = 8


@dataclass(frozen=True)
class Region:
    """One resolved conditioning entry: model-call kwargs for the whole batch, where and when it acts.

    ``area`` is ``(height, width, y, x)`` in latent cells; ``mask`` is ``[B or 1, h, w]`` at the
    latent's full size.  The entry is skipped while sigma > ``sigma_start`` or sigma < ``sigma_end``.
    """

    kwargs: dict[str, Any]
    area: tuple[int, int, int, int] | None = None
    mask: torch.Tensor | None = None
    mask_strength: float = 1.0
    strength: float = 1.0
    sigma_start: float = float("inf")
    sigma_end: float = 0.0

    def active(self, sigma: float) -> bool:
        return not (sigma > self.sigma_start or sigma < self.sigma_end)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        if self.area is None:
            return x
        h, w, y, xx = self.area
        return x[:, :, y:y + h, xx:xx + w]

    def call_kwargs(self) -> dict[str, Any]:
        """The model-call kwargs for this entry's crop: an inpainting/control model's extra input
        (``concat``, full latent size) is cropped with the latent, as ComfyUI crops ``c_concat``."""
        cat = self.kwargs.get("concat")
        if cat is None or self.area is None:
            return self.kwargs
        return {**self.kwargs, "concat": self.crop(cat)}

    def weight(self, crop: torch.Tensor, full: torch.Size) -> torch.Tensor:
        """``mask * mask_strength * strength`` over the crop, feathered at inner area edges."""
        if self.mask is not None:
            m = self.crop(self.mask[:, None].to(crop.device, crop.dtype))[: crop.shape[0]] * self.mask_strength
            mult = m.repeat(crop.shape[0] // m.shape[0], crop.shape[1], 1, 1) * self.strength
        else:
            mult = torch.ones_like(crop) * self.strength
        if self.mask is None and self.area is not None:
            _feather(mult, self.area, full)
        return mult


def _feather(mult: torch.Tensor, area: tuple[int, int, int, int], full: torch.Size) -> None:
    """Linear ramps (1/rr .. rr/rr) over the rr cells inside each area edge that is not the border."""
    for dim in (0, 1):
        size, offset, axis = area[dim], area[2 + dim], 2 + dim
        rr = min(FEATHER, mult.shape[axis] // 4)
        if offset != 0:
            for t in range(rr):
                mult.narrow(axis, t, 1).mul_((t + 1) / rr)
        if size + offset < full[axis]:
            for t in range(rr):
                mult.narrow(axis, size - 1 - t, 1).mul_((t + 1) / rr)


def same_area_for_opposite(regions: Sequence[Region], opposite: Sequence[Region]) -> list[Region]:
    """ComfyUI's "each area has an opposite one": for every area entry of ``regions`` with no
    same-area entry in ``opposite``, add one to ``opposite``.  It is the area entry (area, mask,
    strength, window and ControlNets) with the prompt of the smallest opposite entry covering it
    (a whole-image entry if no area covers it), so CFG compares like with like inside the area."""
    out = list(opposite)
    for r in regions:
        if r.area is None:
            continue
        smallest = _smallest_cover(r.area, out)
        if smallest is None or smallest.area == r.area:
            continue
        kw = {k: v for k, v in smallest.kwargs.items() if k != "controls"}
        if "controls" in r.kwargs:
            kw["controls"] = r.kwargs["controls"]
        out.append(replace(r, kwargs=kw))
    return out


def _smallest_cover(area: tuple[int, int, int, int], regions: Sequence[Region]) -> Region | None:
    h, w, y, x = area
    smallest: Region | None = None
    for r in regions:
        if r.area is None:
            if smallest is None:
                smallest = r
            continue
        rh, rw, ry, rx = r.area
        if y >= ry and x >= rx and ry + rh >= y + h and rx + rw >= x + w:
            if smallest is None or smallest.area is None or smallest.area[0] * smallest.area[1] > rh * rw:
                smallest = r
    return smallest


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _can_share_call(a: _Job, b: _Job) -> bool:
    """Same crop shape, same kwarg keys and tensor shapes, same non-tensor values (ControlNets)."""
    if a.x.shape != b.x.shape or a.kwargs.keys() != b.kwargs.keys():
        return False
    for key, va in a.kwargs.items():
        vb = b.kwargs[key]
        if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
            if va.shape != vb.shape:
                return False
        elif not _same(va, vb):
            return False
    return True


@dataclass
class _Job:
    side: int
    region: Region
    x: torch.Tensor
    mult: torch.Tensor
    kwargs: dict[str, Any]


def blend(denoiser: Denoiser, sides: Sequence[Sequence[Region]], x: torch.Tensor, sigma: torch.Tensor,
          max_batch: int = MAX_BATCH, **extra: Any) -> list[torch.Tensor]:
    """The blended x0 prediction of each side (a list of regions) at ``sigma``; at most
    ``max_batch`` entries share a model call (1 = one call per entry)."""
    s0 = float(torch.as_tensor(sigma).reshape(-1)[0])
    jobs: list[_Job] = []
    for side, regions in enumerate(sides):
        for r in regions:
            if r.active(s0):
                crop = r.crop(x)
                jobs.append(_Job(side, r, crop, r.weight(crop, x.shape), r.call_kwargs()))
    outs = [torch.zeros_like(x) for _ in sides]
    counts = [torch.full_like(x, 1e-37) for _ in sides]
    sigma_b = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])
    while jobs:
        first = jobs[0]
        group = [j for j in jobs if j is first or _can_share_call(first, j)][:max(1, max_batch)]
        jobs = [j for j in jobs if all(j is not g for g in group)]
        pred = _run(denoiser, group, sigma_b, extra)
        for j, p in zip(group, pred.chunk(len(group)), strict=True):
            j.region.crop(outs[j.side]).add_(p * j.mult)
            j.region.crop(counts[j.side]).add_(j.mult)
    return [o / c for o, c in zip(outs, counts, strict=True)]


def _run(denoiser: Denoiser, group: list[_Job], sigma_b: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
    if len(group) == 1:
        return denoiser(group[0].x, sigma_b, **group[0].kwargs, **extra)
    kw = {k: torch.cat([j.kwargs[k] for j in group]) if isinstance(v, torch.Tensor) else v
          for k, v in group[0].kwargs.items()}
    return denoiser(torch.cat([j.x for j in group]), sigma_b.repeat(len(group)), **kw, **extra)


def composite_denoiser(denoiser: Denoiser, cond: Sequence[Region], uncond: Sequence[Region] | None,
                       scale: float, *, max_batch: int = MAX_BATCH) -> Denoiser:
    """Guided denoiser ``uncond + scale * (cond - uncond)`` over lists of entries.

    ``scale == 1`` (or no negative) skips the negative side entirely, like ComfyUI.
    ``max_batch=1`` makes one model call per entry (the bench's reference)."""
    use_uncond = uncond is not None and scale != 1.0
    cond_r = list(cond)
    uncond_r = list(uncond or ())
    if use_uncond:
        uncond_r = same_area_for_opposite(cond_r, uncond_r)
        cond_r = same_area_for_opposite(uncond_r, cond_r)

    def guided(x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not use_uncond:
            return blend(denoiser, [cond_r], x, sigma, max_batch, **kwargs)[0]
        c, u = blend(denoiser, [cond_r, uncond_r], x, sigma, max_batch, **kwargs)
        return u + scale * (c - u)

    return guided
