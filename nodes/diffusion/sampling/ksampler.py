"""The KSampler / KSamplerAdvanced procedure: schedule, noise, slice, inpaint-mask, sample.

This is the one function a node calls.  Semantics follow ComfyUI's nodes of
the same names so that workflows carry over:

* ``denoise < 1`` (img2img) starts part-way down a longer schedule
  (:func:`.schedulers.sigmas_for`).
* ``start_step``/``end_step`` slice the sigma list (KSamplerAdvanced); when
  sampling stops early the last sigma is forced to 0 (a final full denoise)
  unless ``return_with_leftover_noise`` is set, in which case the output
  still carries the noise of its last sigma and can be handed to a second
  sampler starting at that step.
* The noise (seeded per batch item, see :mod:`.noise`) is combined with the
  input latent by the model sampling's ``noise_scaling``: scaled by the first
  sigma and added for UNets (variance exploding), mixed as
  ``(1 - sigma) latent + sigma noise`` for flow models.  For UNets:  ComfyUI instead scales it by
  ``sqrt(1 + sigma^2)`` when starting at the schedule's maximum sigma; the
  difference is 0.2% at SD's sigma_max and vanishes for img2img.
* ``noise_mask`` (1 = repaint, 0 = keep) makes every model call see the
  original latent, re-noised to the current sigma, outside the mask, and
  pastes the original latent back into the denoised prediction and the final
  result there, so the kept region is reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .composite import Region, composite_denoiser
from .guidance import cfg_denoiser
from .model_sampling import Denoiser, DiscreteSchedule, ModelSampling
from .noise import BrownianTreeNoiseSampler, NoiseSampler, derive_seed, initial_noise, item_seeds
from .samplers import (
    BROWNIAN_SAMPLERS,
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SAMPLERS,
    STOCHASTIC_SAMPLERS,
    Callback,
    sampler_for,
)
from .schedulers import sigmas_for


def slice_sigmas(
    sigmas: torch.Tensor,
    start_step: int | None = None,
    end_step: int | None = None,
    return_with_leftover_noise: bool = False,
) -> torch.Tensor:
    """KSamplerAdvanced's step window.  An empty result (start at or past the end) means "no sampling"."""
    sigmas = sigmas.clone()
    if end_step is not None and end_step < len(sigmas) - 1:
        sigmas = sigmas[: end_step + 1]
        if not return_with_leftover_noise:
            sigmas[-1] = 0.0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return sigmas[:0]
        sigmas = sigmas[start_step:]
    return sigmas


def prepare_mask(mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Bring a mask ([H,W], [B,H,W] or [B,1,H,W], any resolution) to the latent's shape, values in [0,1]."""
    m = mask.to(device=latent.device, dtype=torch.float32)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.shape[-2:] != latent.shape[-2:]:
        m = F.interpolate(m, size=latent.shape[-2:], mode="bilinear", align_corners=False)
    m = m.clamp(0, 1)
    if m.shape[0] not in (1, latent.shape[0]):
        reps = -(-latent.shape[0] // m.shape[0])
        m = m.repeat(reps, 1, 1, 1)[: latent.shape[0]]
    return m.to(latent.dtype)


def _masked(denoiser: Denoiser, mask: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor,
            ms: ModelSampling) -> Denoiser:
    keep = 1 - mask

    def inner(x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        x = x * mask + ms.noise_scaling(sigma, noise, latent) * keep
        return denoiser(x, sigma, **kwargs) * mask + latent * keep

    return inner


def sample(
    denoiser: Denoiser,
    schedule: ModelSampling,
    latent: torch.Tensor,
    *,
    sampler: str = "euler",
    scheduler: str = "normal",
    steps: int = 20,
    seed: int = 0,
    cfg: float = 1.0,
    cond_kwargs: dict[str, Any] | list[Region] | None = None,
    uncond_kwargs: dict[str, Any] | list[Region] | None = None,
    denoise: float = 1.0,
    start_step: int | None = None,
    end_step: int | None = None,
    add_noise: bool = True,
    return_with_leftover_noise: bool = False,
    noise_mask: torch.Tensor | None = None,
    callback: Callback | None = None,
    sampler_options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Run one KSampler(Advanced) pass and return the new latent.

    ``denoiser`` is an unguided ``(x, sigma, **kw) -> x0`` (see
    :func:`.model_sampling.make_denoiser`); ``cond_kwargs``/``uncond_kwargs``
    are the keyword arguments of the conditional and unconditional model
    calls, combined with guidance scale ``cfg`` (no uncond pass if
    ``uncond_kwargs`` is None or ``cfg == 1``).  Deterministic for a given
    seed on CPU; ``callback(step, total, x, denoised)`` may raise to cancel.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    sigmas = sigmas_for(
        scheduler, steps, schedule, denoise, discard_penultimate=sampler in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    )
    sigmas = slice_sigmas(sigmas, start_step, end_step, return_with_leftover_noise)
    return sample_sigmas(denoiser, latent, sigmas, sampler=sampler, seed=seed, add_noise=add_noise, cfg=cfg,
                         cond_kwargs=cond_kwargs, uncond_kwargs=uncond_kwargs, noise_mask=noise_mask,
                         callback=callback, sampler_options=sampler_options, model_sampling=schedule)


def sample_sigmas(
    denoiser: Denoiser,
    latent: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sampler: str = "euler",
    seed: int = 0,
    add_noise: bool = True,
    cfg: float = 1.0,
    cond_kwargs: dict[str, Any] | list[Region] | None = None,
    uncond_kwargs: dict[str, Any] | list[Region] | None = None,
    noise_mask: torch.Tensor | None = None,
    callback: Callback | None = None,
    sampler_options: dict[str, Any] | None = None,
    model_sampling: ModelSampling | None = None,
) -> torch.Tensor:
    """Sample over an explicit sigma list (what custom-sampling graphs provide).

    :func:`sample` computes the sigmas and calls this, so a KSampler and an
    equivalent custom-sampling graph share one code path and give the same image.
    ``cond_kwargs``/``uncond_kwargs`` may be lists of :class:`.composite.Region` (several
    conditioning entries, blended as ComfyUI does).  ``model_sampling`` says how noise and latent
    combine (default: variance exploding)
    and, for flow models, picks the flow variants of the stochastic samplers.
    """
    ms: ModelSampling = model_sampling if model_sampling is not None else _VE
    fn: Callable[..., torch.Tensor] = sampler_for(sampler, flow=ms.is_flow)
    if len(sigmas) < 2:
        return latent.clone()
    sigmas = sigmas.to(latent.device, torch.float32)

    seeds = item_seeds(seed, latent.shape[0])
    if add_noise:
        noise = initial_noise(latent.shape, seed, device=latent.device, dtype=latent.dtype)
    else:
        noise = torch.zeros_like(latent)

    model: Denoiser = denoiser
    if isinstance(cond_kwargs, list) or isinstance(uncond_kwargs, list):
        model = composite_denoiser(denoiser, _regions(cond_kwargs), None if uncond_kwargs is None
                                   else _regions(uncond_kwargs), cfg)
    elif uncond_kwargs is not None:
        model = cfg_denoiser(denoiser, cond_kwargs or {}, uncond_kwargs, cfg)
    elif cond_kwargs:
        model = cfg_denoiser(denoiser, cond_kwargs, {}, 1.0)
    mask = None
    if noise_mask is not None:
        mask = prepare_mask(noise_mask, latent)
        model = _masked(model, mask, latent, noise, ms)

    x = ms.noise_scaling(sigmas[0], noise, latent)
    options: dict[str, Any] = dict(sampler_options or {})
    if sampler in BROWNIAN_SAMPLERS:
        positive = sigmas[sigmas > 0]
        options.setdefault(
            "noise_sampler",
            BrownianTreeNoiseSampler(
                x, float(positive.min()), float(sigmas.max()), [derive_seed(s, "brownian") for s in seeds]
            ),
        )
    elif sampler in STOCHASTIC_SAMPLERS:
        options.setdefault("noise_sampler", NoiseSampler(x, [derive_seed(s, "ancestral") for s in seeds]))

    out = fn(model, x, sigmas, callback=callback, **options)
    if mask is not None:
        out = out * mask + ms.noise_scaling(sigmas[-1], noise, latent) * (1 - mask)
    return ms.inverse_noise_scaling(sigmas[-1], out)


def _regions(value: dict[str, Any] | list[Region] | None) -> list[Region]:
    """Conditioning as regions: a kwargs dict is one whole-image entry."""
    if isinstance(value, list):
        return value
    return [Region(value or {})]


class _VarianceExploding:
    """Noise scaling of callers that pass no model sampling: ``latent + sigma * noise``."""

    is_flow = False
    noise_scaling = DiscreteSchedule.noise_scaling
    inverse_noise_scaling = DiscreteSchedule.inverse_noise_scaling


_VE: Any = _VarianceExploding()
