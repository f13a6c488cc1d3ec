"""Reproducible noise.

Two guarantees, both needed to make "seed" mean something to a user:

* **Device independence.**  All random numbers are drawn from CPU
  ``torch.Generator`` objects and only then moved to the target device and
  dtype, so a seed gives the same picture on CPU, CUDA or MPS.
* **Per-image reproducibility.**  Item ``i`` of a batch generated with seed
  ``s`` uses its own generator seeded with ``s + i``.  Rendering a batch of 4
  with seed 100 therefore yields exactly the images that seeds 100, 101, 102
  and 103 give one at a time, so a user can re-render (or upscale) one
  favourite out of a batch.  (ComfyUI draws a whole batch from one generator
  instead, so its batch items cannot be reproduced alone.)

The per-step noise of ancestral/SDE samplers must not repeat the initial
noise, so it comes from a different stream derived from the same item seed
(:func:`derive_seed`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torchsde


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for a named random stream of one item, independent of other streams."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def item_seeds(seed: int, batch_size: int) -> list[int]:
    """The seed of each batch item: ``seed + i``."""
    return [seed + i for i in range(batch_size)]


def _randn_items(
    item_shape: Sequence[int], seeds: Sequence[int], device: torch.device | str | None, dtype: torch.dtype
) -> torch.Tensor:
    items = []
    for s in seeds:
        gen = torch.Generator(device="cpu").manual_seed(int(s))
        items.append(torch.randn(tuple(item_shape), generator=gen, dtype=torch.float32))
    return torch.stack(items).to(device=device, dtype=dtype)


def initial_noise(
    shape: Sequence[int],
    seed: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Unit Gaussian noise of ``shape`` (batch first); item ``i`` is drawn with seed ``seed + i``."""
    return _randn_items(shape[1:], item_seeds(seed, shape[0]), device, dtype)


class NoiseSampler:
    """Fresh unit Gaussian noise for each ancestral step, one CPU generator per batch item.

    Called as ``sampler(sigma, sigma_next)`` like k-diffusion's noise
    samplers; the arguments are ignored because every call is an independent
    draw.
    """

    def __init__(self, x: torch.Tensor, seeds: Sequence[int]) -> None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"need one seed per batch item ({x.shape[0]}), got {len(seeds)}")
        self.item_shape = tuple(x.shape[1:])
        self.device, self.dtype = x.device, x.dtype
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def __call__(
        self, sigma: torch.Tensor | float | None = None, sigma_next: torch.Tensor | float | None = None
    ):
        items = [torch.randn(self.item_shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(items).to(device=self.device, dtype=self.dtype)


class BrownianTreeNoiseSampler:
    """Noise for SDE samplers taken from a Brownian motion over sigma (torchsde ``BrownianTree``).

    ``sampler(sigma, sigma_next)`` returns ``(W(sigma_next) - W(sigma)) /
    sqrt(|sigma_next - sigma|)``: unit Gaussian, but *consistent across step
    counts* -- the noise injected over an interval does not depend on how
    finely it is subdivided, so changing the step count changes the image
    less than with independent draws.  One tree per batch item (seeded
    individually) keeps the per-image reproducibility guarantee.
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seeds: Sequence[int]) -> None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"need one seed per batch item ({x.shape[0]}), got {len(seeds)}")
        self.device, self.dtype = x.device, x.dtype
        t0, t1 = sorted((float(sigma_min), float(sigma_max)))
        w0 = torch.zeros((1, *x.shape[1:]), dtype=torch.float32)
        self.trees = [
            torchsde.BrownianTree(torch.tensor(t0), w0, torch.tensor(t1), entropy=int(s)) for s in seeds
        ]

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        lo, hi = min(a, b), max(a, b)
        sign = 1.0 if b >= a else -1.0
        tl, th = torch.tensor(lo), torch.tensor(hi)
        w = torch.cat([tree(tl, th) for tree in self.trees]) * sign
        return (w / (hi - lo) ** 0.5).to(device=self.device, dtype=self.dtype)
