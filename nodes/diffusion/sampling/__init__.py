"""Sampling library: noise schedule, sigma schedulers, k-diffusion-style samplers, noise, CFG, KSampler.

Plain PyTorch, no engine imports.  Typical use::

    schedule = make_schedule()                       # SD1.x/SDXL DDPM schedule
    denoiser = make_denoiser(unet_call, schedule, "eps")
    latent = sample(denoiser, schedule, empty_latent, sampler="dpmpp_2m", scheduler="karras",
                    steps=20, seed=42, cfg=7.0, cond_kwargs={"context": c}, uncond_kwargs={"context": u})
"""

from .guidance import cfg_denoiser
from .ksampler import prepare_mask, sample, slice_sigmas
from .model_sampling import (
    Denoiser,
    DiscreteSchedule,
    FlowSchedule,
    ModelSampling,
    PredictionType,
    flux_mu,
    flux_schedule,
    make_denoiser,
    make_schedule,
    time_shift,
)
from .noise import BrownianTreeNoiseSampler, NoiseSampler, derive_seed, initial_noise, item_seeds
from .samplers import (
    BROWNIAN_SAMPLERS,
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    FLOW_SAMPLERS,
    SAMPLERS,
    STOCHASTIC_SAMPLERS,
    ancestral_step,
    ancestral_step_rf,
    sampler_for,
    to_d,
)
from .schedulers import SCHEDULERS, sigmas_for

__all__ = [
    "BROWNIAN_SAMPLERS",
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SAMPLERS",
    "SCHEDULERS",
    "STOCHASTIC_SAMPLERS",
    "BrownianTreeNoiseSampler",
    "Denoiser",
    "DiscreteSchedule",
    "FLOW_SAMPLERS",
    "FlowSchedule",
    "ModelSampling",
    "NoiseSampler",
    "PredictionType",
    "ancestral_step",
    "ancestral_step_rf",
    "cfg_denoiser",
    "derive_seed",
    "flux_mu",
    "flux_schedule",
    "initial_noise",
    "item_seeds",
    "make_denoiser",
    "make_schedule",
    "prepare_mask",
    "sample",
    "sampler_for",
    "sigmas_for",
    "slice_sigmas",
    "time_shift",
    "to_d",
]
