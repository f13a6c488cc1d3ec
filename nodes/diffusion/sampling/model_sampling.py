"""Model sampling: the noise schedule a model was trained with, and the denoiser wrapper.

Samplers in this package work in the "k-diffusion" (variance-exploding)
parametrisation: a noisy latent is ``x = x0 + sigma * eps`` and a *denoiser*
maps ``(x, sigma) -> x0``.  Stable-Diffusion UNets were trained in the
variance-preserving DDPM parametrisation instead (``x_t = sqrt(a) x0 +
sqrt(1-a) eps`` at an integer timestep ``t``).  The two are related by
``sigma = sqrt((1 - a) / a)`` and ``x = x_t / sqrt(a)``; this module holds that
conversion so that no sampler ever needs to know about timesteps or alphas.

Flow-matching (rectified-flow) models such as FLUX were trained on
``x = (1 - sigma) x0 + sigma * noise`` with sigma in [0, 1] and predict the
velocity ``v = noise - x0``.  :class:`FlowSchedule` describes them with the
same interface as :class:`DiscreteSchedule` (sigma range, sigma <-> model
timestep, a table of training sigmas for the table-based schedulers, and the
noise scaling), so every scheduler and ODE sampler works on both.  Their
denoiser returns ``x0 = x - sigma * v`` (ComfyUI's "CONST" prediction); with
it the samplers' derivative ``(x - x0) / sigma`` is exactly ``v``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

PredictionType = Literal["eps", "v", "sample", "flow"]
Denoiser = Callable[..., torch.Tensor]
"""``denoiser(x, sigma, **kwargs) -> x0``; ``sigma`` is a tensor of shape ``[batch]``."""


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """A DDPM training schedule reduced to what sampling needs: one sigma per training timestep.

    ``sigmas[t]`` is the noise level the model saw at integer timestep ``t``
    (ascending in ``t``).  Between integer timesteps we interpolate linearly in
    ``log(sigma)``, the same convention as k-diffusion's ``DiscreteSchedule``
    and diffusers' Karras-style schedulers, so fractional timesteps are valid
    model inputs.
    """

    alphas_cumprod: torch.Tensor  # float64, shape [T]
    sigmas: torch.Tensor  # float32, shape [T], ascending
    log_sigmas: torch.Tensor  # float32, shape [T]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.sigmas.shape[0])

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool = False) -> torch.Tensor:
        """Fractional training timestep whose sigma is ``sigma`` (log-sigma interpolation).

        ``quantize=True`` snaps to the nearest integer timestep (ComfyUI's
        ``timestep()`` behaviour); the default interpolates like diffusers.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.clamp(min=1e-10).log().reshape(-1)
        log_sigmas = self.log_sigmas.to(log_sigma.device)
        dists = log_sigma[None, :] - log_sigmas[:, None]  # [T, N]
        if quantize:
            return dists.abs().argmin(dim=0).to(torch.float32).reshape(sigma.shape)
        # index of the last training sigma that is <= the requested one
        low = dists.ge(0).to(torch.int64).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high = low + 1
        lo, hi = log_sigmas[low], log_sigmas[high]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        t = (1 - w) * low + w * high
        return t.reshape(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (possibly fractional) training timestep, interpolating ``log(sigma)``."""
        t = torch.as_tensor(t, dtype=torch.float32).clamp(0, self.num_train_timesteps - 1)
        log_sigmas = self.log_sigmas.to(t.device)
        low = t.floor().long()
        high = t.ceil().long()
        w = t - low
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma reached after ``percent`` (0..1) of the denoising trajectory, measured in timesteps.

        Used for "apply this conditioning / ControlNet from 20% to 80%" ranges:
        0 maps to +inf-like (before any step), 1 to sigma 0 (after the last).
        """
        if percent <= 0.0:
            return float("inf")
        if percent >= 1.0:
            return 0.0
        return float(self.t_to_sigma((1.0 - percent) * (self.num_train_timesteps - 1)))

    is_flow = False

    def noise_scaling(self, sigma: torch.Tensor | float, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The sampler's start point at ``sigma``: ``latent + sigma * noise`` (variance exploding)."""
        return latent + noise * _bcast(sigma, latent)

    def inverse_noise_scaling(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """A sampler's output back to a LATENT (identity in the variance-exploding form)."""
        return x


def time_shift(shift: float, t: torch.Tensor) -> torch.Tensor:
    """Rectified-flow timestep shift ``shift * t / (1 + (shift - 1) * t)``.

    With ``shift = exp(mu)`` this equals FLUX's ``exp(mu) / (exp(mu) + 1/t - 1)``;
    a shift > 1 spends more of the trajectory at high noise (larger images need it).
    """
    return shift * t / (1 + (shift - 1) * t)


@dataclass(frozen=True, eq=False)
class FlowSchedule:
    """Rectified-flow model sampling: ``sigma(t) = time_shift(shift, t / multiplier)``, t in [0, multiplier].

    ``multiplier`` is what the model takes as its timestep for sigma 1 (FLUX: 1,
    its embedder scales by 1000 itself; SD3: 1000).  ``table_size`` is the number
    of training sigmas the table-based schedulers (simple, ddim_uniform, beta)
    pick from: ComfyUI uses 10,000 for FLUX-dev and 1,000 for the other flow models.
    """

    shift: float = 1.0
    multiplier: float = 1.0
    table_size: int = 1000

    is_flow = True

    @property
    def sigmas(self) -> torch.Tensor:
        """Training sigmas at t = k / table_size, k = 1..table_size (ascending, float32)."""
        t = torch.arange(1, self.table_size + 1, dtype=torch.float64) / self.table_size
        return time_shift(self.shift, t).to(torch.float32)

    @property
    def log_sigmas(self) -> torch.Tensor:
        return self.sigmas.log()

    @property
    def num_train_timesteps(self) -> int:
        return self.table_size

    @property
    def sigma_min(self) -> float:
        return float(time_shift(self.shift, torch.tensor(1.0 / self.table_size, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return 1.0

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool = False) -> torch.Tensor:
        """The model's timestep input for ``sigma`` (``sigma * multiplier``; continuous, never quantized)."""
        return torch.as_tensor(sigma, dtype=torch.float32) * self.multiplier

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64) / self.multiplier
        return time_shift(self.shift, t.clamp(0, 1)).to(torch.float32)

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma after ``percent`` of the trajectory: 0 -> 1 (pure noise), 1 -> 0."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(time_shift(self.shift, torch.tensor(1.0 - percent, dtype=torch.float64)))

    def noise_scaling(self, sigma: torch.Tensor | float, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``(1 - sigma) * latent + sigma * noise``: the point on the straight path at ``sigma``."""
        s = _bcast(sigma, latent)
        return latent * (1 - s) + noise * s

    def inverse_noise_scaling(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """Undo the ``1 - sigma`` factor of a latent left noisy (KSamplerAdvanced's leftover noise), so a
        second sampler that adds no noise and calls :meth:`noise_scaling` gets ``x`` back, as in ComfyUI."""
        s = _bcast(sigma, x)
        return x / (1 - s)


ModelSampling = DiscreteSchedule | FlowSchedule
"""What samplers and schedulers need of a model: sigma range, sigma <-> timestep, noise scaling."""


def flux_mu(width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """FLUX's resolution-dependent shift ``mu``: linear in the number of image tokens
    (``width * height / 256`` for 8x VAE downscale and 2x2 patches), ``base_shift`` at
    256 tokens and ``max_shift`` at 4096 (ComfyUI's ModelSamplingFlux, diffusers' dynamic shift)."""
    tokens = width * height / (8 * 8 * 2 * 2)
    slope = (max_shift - base_shift) / (4096 - 256)
    return tokens * slope + (base_shift - slope * 256)


def flux_schedule(mu: float = 1.15) -> FlowSchedule:
    """FLUX-dev's model sampling: shift ``exp(mu)`` over a 10,000-entry table (``mu`` 1.15 when
    no ModelSamplingFlux node sets it from the image size, as in ComfyUI)."""
    return FlowSchedule(shift=math.exp(mu), multiplier=1.0, table_size=10000)


def make_schedule(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "scaled_linear",
    linear_start: float = 0.00085,
    linear_end: float = 0.012,
) -> DiscreteSchedule:
    """Build the DDPM schedule used by SD1.x/SD2.x/SDXL (defaults) or a plain "linear" one.

    ``scaled_linear`` is linear in ``sqrt(beta)``; ``linear`` is linear in beta.
    Everything is computed in float64 and the sigmas stored in float32 (computing
    ``1 - alphas_cumprod`` in float32 would lose ~1e-5 relative at small t).
    """
    n = num_train_timesteps
    if beta_schedule == "scaled_linear":
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, n, dtype=torch.float64) ** 2
    elif beta_schedule == "linear":
        betas = torch.linspace(linear_start, linear_end, n, dtype=torch.float64)
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r} (expected 'scaled_linear' or 'linear')")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).to(torch.float32)
    return DiscreteSchedule(alphas_cumprod=alphas_cumprod, sigmas=sigmas, log_sigmas=sigmas.log())


def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-item sigma ``[B]`` (or scalar) to broadcast over ``x``."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def make_denoiser(
    model_fn: Callable[..., torch.Tensor],
    schedule: ModelSampling,
    prediction_type: PredictionType = "eps",
    quantize_t: bool = False,
) -> Denoiser:
    """Wrap a raw UNet call ``model_fn(x_in, t, **kw)`` into a denoiser ``(x, sigma, **kw) -> x0``.

    The UNet expects the variance-preserving input ``x / sqrt(sigma^2 + 1)``
    and the training timestep of ``sigma``.  Its output is converted to x0:

    * ``eps``: ``x0 = x - sigma * eps``
    * ``v``: ``x0 = x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)`` (sigma_data = 1)
    * ``sample``: the UNet predicts x0 directly.
    * ``flow`` (a :class:`FlowSchedule`): the model sees ``x`` unscaled and predicts the
      velocity ``v``; ``x0 = x - sigma * v``.
    """
    if prediction_type not in ("eps", "v", "sample", "flow"):
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    if (prediction_type == "flow") != schedule.is_flow:
        raise ValueError(f"prediction {prediction_type!r} does not fit a {type(schedule).__name__}")
    if prediction_type == "flow":

        def flow_denoiser(x: torch.Tensor, sigma: torch.Tensor | float, **kwargs: Any) -> torch.Tensor:
            s = _bcast(sigma, x)
            return x - s * model_fn(x, schedule.sigma_to_t(s.reshape(-1).to(torch.float32)), **kwargs)

        return flow_denoiser

    def denoiser(x: torch.Tensor, sigma: torch.Tensor | float, **kwargs: Any) -> torch.Tensor:
        s = _bcast(sigma, x)
        c_in = 1.0 / (s**2 + 1.0) ** 0.5
        t = schedule.sigma_to_t(s.reshape(-1).to(torch.float32), quantize=quantize_t)
        out = model_fn(x * c_in, t, **kwargs)
        if prediction_type == "eps":
            return x - s * out
        if prediction_type == "v":
            return x / (s**2 + 1.0) - out * s * c_in
        return out

    return denoiser
