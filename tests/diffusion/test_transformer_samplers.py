"""The samplers and schedulers added for the transformer families, each against a reference.

* ``ddpm``: step for step against diffusers' DDPMScheduler with the same noise draws.
* ``dpmpp_3m_sde``: at eta 0 against diffusers' third-order DPMSolverMultistepScheduler.
* ``res_multistep``, ``dpmpp_2s_ancestral`` (eta 0): second-order convergence on Gaussian data,
  whose probability-flow ODE has a closed-form solution (halving the step must divide the error
  by ~4; Euler, ~2, is the negative control).  A multistep method started with lower-order steps
  is only second order globally, so 3M's third order is checked against diffusers instead.
* The stochastic samplers and their flow variants: on Gaussian data with the exact denoiser,
  an ancestral/SDE sampler must end with the data's mean and standard deviation (a wrong
  noise amount shows up directly; ``s_noise = 1.5`` is the negative control).
* ``linear_quadratic`` against diffusers' Mochi schedule function, ``kl_optimal`` against its
  closed form (uniform in atan(sigma)).
"""

from __future__ import annotations

import math

import pytest
import torch

from nodes.diffusion.catalogue import COMFY_SAMPLER_VARIANTS, SAMPLER_NAMES, SCHEDULER_NAMES
from nodes.diffusion.sampling import SAMPLERS, SCHEDULERS, make_schedule, sample
from nodes.diffusion.sampling.samplers import dpmpp_2s_ancestral_rf, dpmpp_3m_sde_rf, euler
from tests.diffusion.test_sampling_parity import (
    DENOISER,
    RTOL,
    SCHEDULE,
    SD_CONFIG,
    discrete_sigmas,
    generator_noise,
    rel_err,
    run_diffusers,
    start_latent,
)

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NEW_SAMPLERS = ("res_multistep", "ddpm", "dpmpp_2s_ancestral", "dpmpp_3m_sde")


# ----------------------------------------------------------------------------- diffusers parity


def test_ddpm_parity_with_shared_noise() -> None:
    sched = diffusers.DDPMScheduler(**SD_CONFIG, clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(10)
    sigmas = discrete_sigmas(sched.timesteps)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["ddpm"](DENOISER, x.clone(), sigmas, noise_sampler=generator_noise(9))
    ref = run_diffusers(sched, x.clone(), vp=True, generator=torch.Generator().manual_seed(9))
    assert rel_err(ours, ref) < RTOL


@pytest.mark.parametrize("steps", [8, 16])
def test_dpmpp_3m_sde_at_eta_0_is_diffusers_third_order(steps: int) -> None:
    sched = diffusers.DPMSolverMultistepScheduler(**SD_CONFIG, algorithm_type="dpmsolver++", solver_order=3,
                                                  final_sigmas_type="zero", lower_order_final=False)  # fmt: skip
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float32)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["dpmpp_3m_sde"](DENOISER, x.clone(), sigmas, eta=0.0)
    ref = run_diffusers(sched, x.clone(), vp=True)
    assert rel_err(ours, ref) < RTOL
    # negative control: the second-order solver is measurably different on the same sigmas
    assert rel_err(SAMPLERS["dpmpp_2m"](DENOISER, x.clone(), sigmas), ref) > 10 * RTOL


# ----------------------------------------------------------------------------- Gaussian data

MU, S = 0.7, 0.5


def ve_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact x0 estimate for x0 ~ N(MU, S^2) and x = x0 + sigma n."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S**2 / (S**2 + s**2) * (x - MU)


def flow_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact x0 estimate for x0 ~ N(MU, S^2) and x = (1 - sigma) x0 + sigma n."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + (1 - s) * S**2 / ((1 - s) ** 2 * S**2 + s**2) * (x - (1 - s) * MU)


def ve_ode_solution(x: torch.Tensor, sigma0: float, sigma1: float) -> torch.Tensor:
    """The probability-flow ODE map sigma0 -> sigma1 for Gaussian data: an affine scaling about MU."""
    return MU + math.sqrt(S**2 + sigma1**2) / math.sqrt(S**2 + sigma0**2) * (x - MU)


def _ode_error(name: str, steps: int) -> float:
    sigmas = torch.logspace(math.log10(10.0), math.log10(0.05), steps + 1)  # ends above 0: no final Euler step
    x = MU + 10.0 * torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    fn = euler if name == "euler" else SAMPLERS[name]
    out = fn(ve_denoiser, x.clone(), sigmas, eta=0.0)
    return float((out - ve_ode_solution(x, 10.0, 0.05)).abs().max())


@pytest.mark.parametrize(("name", "order"), [("euler", 1), ("res_multistep", 2), ("dpmpp_2s_ancestral", 2)])
def test_deterministic_convergence_order(name: str, order: int) -> None:
    """err(N) / err(2N) ~ 2^order on the exact Gaussian ODE (measured: 1.97 for Euler, 4.0 and 3.9)."""
    ratio = _ode_error(name, 24) / _ode_error(name, 48)
    lo, hi = {1: (1.6, 2.6), 2: (3.2, 5.0)}[order]
    assert lo < ratio < hi, ratio


def test_res_multistep_first_step_is_euler() -> None:
    x = start_latent(5.0)
    sigmas = torch.tensor([5.0, 2.0])
    assert torch.equal(SAMPLERS["res_multistep"](DENOISER, x.clone(), sigmas), euler(DENOISER, x.clone(), sigmas))


def _randn_sampler(shape, seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(shape, generator=g)


def _moments(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std())


SHAPE = (128, 256)  # 32,768 samples: mean to +-0.003, std to +-0.4% (1 s.e.)


@pytest.mark.parametrize("name", ["ddpm", "dpmpp_2s_ancestral", "dpmpp_3m_sde", "res_multistep_eta1"])
def test_stochastic_samplers_reach_the_data_distribution(name: str) -> None:
    schedule = make_schedule()
    # DDPM (like Euler ancestral, which it equals in sigma space) under-disperses with few steps
    sigmas = SCHEDULERS["karras"](schedule, 200 if name == "ddpm" else 40)
    x = MU + float(sigmas[0]) * torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    fn, extra = (SAMPLERS["res_multistep"], {"eta": 1.0}) if name == "res_multistep_eta1" else (SAMPLERS[name], {})
    out = fn(ve_denoiser, x.clone(), sigmas, noise_sampler=_randn_sampler(SHAPE, 2), **extra)
    mean, std = _moments(out)
    assert abs(mean - MU) < 0.02 and abs(std / S - 1) < 0.03, (mean, std)
    if name != "ddpm":  # ddpm's noise is fixed by the posterior (s_noise ignored, as ComfyUI)
        loud = fn(ve_denoiser, x.clone(), sigmas, noise_sampler=_randn_sampler(SHAPE, 2), s_noise=1.5, **extra)
        assert abs(_moments(loud)[1] / S - 1) > 0.06


def _flow_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    t = torch.linspace(1, 0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


@pytest.mark.parametrize("fn", [dpmpp_2s_ancestral_rf, dpmpp_3m_sde_rf], ids=["2s_ancestral_rf", "3m_sde_rf"])
def test_flow_variants_reach_the_data_distribution(fn) -> None:
    sigmas = _flow_sigmas(100)  # the shifted schedule's first steps are large: 30 steps are still 6-10% off
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))  # sigma 1: pure noise
    out = fn(flow_denoiser, noise.clone(), sigmas, noise_sampler=_randn_sampler(SHAPE, 4))
    mean, std = _moments(out)
    assert abs(mean - MU) < 0.02 and abs(std / S - 1) < 0.03, (mean, std)
    loud = fn(flow_denoiser, noise.clone(), sigmas, noise_sampler=_randn_sampler(SHAPE, 4), s_noise=1.5)
    assert abs(_moments(loud)[1] / S - 1) > 0.06
    # eta 0: the deterministic flow map sends noise n to MU + S n
    det = fn(flow_denoiser, noise.clone(), sigmas, eta=0.0)
    assert float((det - (MU + S * noise)).abs().max()) < 0.02


def test_variance_exploding_3m_sde_is_wrong_for_flow_models() -> None:
    """Why the flow variant exists: the VE noise term on a flow model leaves the wrong spread."""
    sigmas = _flow_sigmas(30)
    sigmas[0] = 0.9999
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    out = SAMPLERS["dpmpp_3m_sde"](flow_denoiser, noise.clone(), sigmas, noise_sampler=_randn_sampler(SHAPE, 6))
    assert abs(_moments(out)[1] / S - 1) > 0.05


# ----------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize("steps", [4, 9, 30])
def test_linear_quadratic_matches_mochi_schedule(steps: int) -> None:
    from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule

    schedule = make_schedule()
    ours = SCHEDULERS["linear_quadratic"](schedule, steps)
    ref = torch.tensor([*linear_quadratic_schedule(steps, 0.025), 0.0], dtype=torch.float64) * schedule.sigma_max
    assert ours.shape == (steps + 1,) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-6 * schedule.sigma_max)
    assert SCHEDULERS["linear_quadratic"](schedule, 1).tolist() == pytest.approx([schedule.sigma_max, 0.0])


@pytest.mark.parametrize("steps", [1, 2, 7, 25])
def test_kl_optimal_is_uniform_in_atan_sigma(steps: int) -> None:
    schedule = make_schedule()
    ours = SCHEDULERS["kl_optimal"](schedule, steps)
    assert ours.shape == (steps + 1,) and float(ours[-1]) == 0.0
    lo, hi = math.atan(schedule.sigma_min), math.atan(schedule.sigma_max)
    expected = [math.tan(hi + (lo - hi) * i / max(steps - 1, 1)) for i in range(steps)]
    torch.testing.assert_close(ours[:-1].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0.0)


# ----------------------------------------------------------------------------- catalogue / KSampler wiring


def test_catalogue_rows() -> None:
    assert set(NEW_SAMPLERS) <= set(SAMPLER_NAMES) and set(NEW_SAMPLERS) <= set(SAMPLERS)
    assert {"linear_quadratic", "kl_optimal"} <= set(SCHEDULER_NAMES)
    assert COMFY_SAMPLER_VARIANTS["dpmpp_3m_sde_gpu"] == "dpmpp_3m_sde"


@pytest.mark.parametrize("name", NEW_SAMPLERS)
def test_ksampler_runs_new_samplers_seeded(name: str) -> None:
    latent = torch.zeros(1, 3, 4, 4)
    run = lambda seed: sample(DENOISER, SCHEDULE, latent, sampler=name, scheduler="kl_optimal", steps=6, seed=seed)  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    assert torch.isfinite(a).all() and torch.equal(a, b) and not torch.equal(a, c)
