"""Sigma schedules: which noise levels a sampler visits, from high to low, ending at 0.

The names and semantics follow ComfyUI's scheduler list so that a workflow
ported from there picks the same noise levels.  Every function takes the
model's sampling (:class:`DiscreteSchedule`, or :class:`FlowSchedule` for
flow-matching models: the same functions then give ComfyUI's sigmas for those
models) and a step count and returns a float32 tensor; all but ``ddim_uniform``
and ``beta`` return exactly ``steps + 1`` values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..catalogue import SCHEDULER_NAMES, functions_for
from .model_sampling import ModelSampling

SigmaSchedule = Callable[[ModelSampling, int], torch.Tensor]


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(torch.float32), sigmas.new_zeros(1, dtype=torch.float32)])


def karras(schedule: ModelSampling, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: uniform in ``sigma ** (1/rho)``, concentrating steps at low noise."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = schedule.sigma_min ** (1 / rho), schedule.sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(schedule: ModelSampling, steps: int) -> torch.Tensor:
    """Uniform in ``log(sigma)`` between sigma_max and sigma_min."""
    log_sigmas = torch.linspace(math.log(schedule.sigma_max), math.log(schedule.sigma_min), steps)
    return _append_zero(log_sigmas.exp())


def _timestep_uniform(schedule: ModelSampling, steps: int, include_end: bool) -> torch.Tensor:
    start = float(schedule.sigma_to_t(schedule.sigma_max))
    end = float(schedule.sigma_to_t(schedule.sigma_min))
    if include_end:
        ts = torch.linspace(start, end, steps)
    else:
        ts = torch.linspace(start, end, steps + 1)[:-1]
    return _append_zero(schedule.t_to_sigma(ts))


def normal(schedule: ModelSampling, steps: int) -> torch.Tensor:
    """Uniform in (fractional) training timestep, from the last timestep down to timestep 0 inclusive."""
    return _timestep_uniform(schedule, steps, include_end=True)


def sgm_uniform(schedule: ModelSampling, steps: int) -> torch.Tensor:
    """Like ``normal`` but the grid has ``steps + 1`` points and the last (timestep 0) is replaced by sigma 0.

    This is the spacing Stability's sgm code (SDXL, Turbo/LCM) uses, and it
    avoids spending a whole step going from sigma_min to 0.
    """
    return _timestep_uniform(schedule, steps, include_end=False)


def simple(schedule: ModelSampling, steps: int) -> torch.Tensor:
    """Every ``T/steps``-th training sigma counted from the top (timestep T-1 first)."""
    sigmas = schedule.sigmas
    stride = len(sigmas) / steps
    picked = [float(sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return _append_zero(torch.tensor(picked, dtype=torch.float32))


def ddim_uniform(schedule: ModelSampling, steps: int) -> torch.Tensor:
    """Training timesteps 1, 1+k, 1+2k, ... (k = T // steps), reversed, plus 0: the grid of DDIM "leading"
    spacing with ``steps_offset=1``.

    As in ComfyUI, when T is not a multiple of ``steps`` the grid can hold a
    few more than ``steps`` points; the result then has more than ``steps + 1``
    sigmas.
    """
    sigmas = schedule.sigmas
    stride = max(len(sigmas) // steps, 1)
    picked = [float(sigmas[i]) for i in range(1, len(sigmas), stride)]
    return _append_zero(torch.tensor(picked[::-1], dtype=torch.float32))


def beta(schedule: ModelSampling, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Training sigmas at the quantiles of a Beta(0.6, 0.6) distribution over the timestep table
    (Lee et al. 2024, "Beta sampling is all you need"): denser at both ends of the trajectory.
    Repeated table entries are dropped, as in ComfyUI, so very many steps can give fewer sigmas."""
    from scipy.stats import beta as beta_dist

    sigmas = schedule.sigmas
    last = len(sigmas) - 1
    quantiles = 1 - torch.linspace(0, 1, steps + 1, dtype=torch.float64)[:-1].numpy()
    picked: list[float] = []
    previous = -1
    for t in (beta_dist.ppf(quantiles, alpha, beta_) * last).round().astype(int):
        if t != previous:
            picked.append(float(sigmas[int(t)]))
        previous = t
    return _append_zero(torch.tensor(picked, dtype=torch.float32))


def linear_quadratic(
    schedule: ModelSampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Genmo's Mochi schedule (ComfyUI's ``linear_quadratic``): in ``1 - sigma/sigma_max``, the first
    ``linear_steps`` (default half) rise linearly to ``threshold_noise``, the rest follow the quadratic
    that continues that line smoothly and reaches 1 (sigma 0) after ``steps``.  Spends half the
    steps in the top 2.5% of the noise range, where flow models settle the composition."""
    if steps == 1:
        return torch.tensor([schedule.sigma_max, 0.0], dtype=torch.float32)
    lin = steps // 2 if linear_steps is None else linear_steps
    quad = steps - lin
    linear_part = [i * threshold_noise / lin for i in range(lin)]
    step_diff = lin - threshold_noise * steps
    quad_coef = step_diff / (lin * quad**2)
    lin_coef = threshold_noise / lin - 2 * step_diff / quad**2
    const = quad_coef * lin**2
    quadratic_part = [quad_coef * i**2 + lin_coef * i + const for i in range(lin, steps)]
    ramp = torch.tensor([*linear_part, *quadratic_part, 1.0], dtype=torch.float64)
    return ((1.0 - ramp) * schedule.sigma_max).to(torch.float32)


def kl_optimal(schedule: ModelSampling, steps: int) -> torch.Tensor:
    """The KL-optimal schedule of arXiv 2404.14507: uniform in ``atan(sigma)`` from sigma_max to sigma_min,
    then 0 — the steps a Gaussian-data KL bound says are evenly informative."""
    if steps == 1:
        return _append_zero(torch.tensor([schedule.sigma_max], dtype=torch.float64))
    frac = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    angles = frac * math.atan(schedule.sigma_min) + (1 - frac) * math.atan(schedule.sigma_max)
    return _append_zero(angles.tan())


SCHEDULERS: dict[str, SigmaSchedule] = functions_for(SCHEDULER_NAMES, globals(), "scheduler")


def sigmas_for(
    scheduler: str,
    steps: int,
    schedule: ModelSampling,
    denoise: float = 1.0,
    discard_penultimate: bool = False,
) -> torch.Tensor:
    """The sigmas a KSampler with this scheduler, step count and denoise strength visits.

    ``denoise < 1`` (img2img) follows ComfyUI: build the schedule for
    ``int(steps / denoise)`` steps and keep only its last ``steps + 1`` sigmas,
    so the sampler starts part-way down the full schedule and still takes
    ``steps`` steps.  ``denoise <= 0`` means "do nothing" and yields an empty
    tensor.  ``discard_penultimate`` drops the last non-zero sigma after
    computing one extra step; ComfyUI does this for samplers (dpm_2,
    dpm_2_ancestral, uni_pc) whose final step to a tiny sigma is wasteful.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {sorted(SCHEDULERS)}")
    if steps <= 0 or denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    fn = SCHEDULERS[scheduler]

    def compute(n: int) -> torch.Tensor:
        if discard_penultimate:
            s = fn(schedule, n + 1)
            return torch.cat([s[:-2], s[-1:]])
        return fn(schedule, n)

    if denoise > 0.9999:
        return compute(steps)
    total = int(steps / denoise)
    return compute(total)[-(steps + 1) :]
