"""Flow-matching model sampling (FLUX, rectified flow): schedules, shift, noise scaling, samplers.

Uses the exact velocity of Gaussian data N(MU, S^2) under ``x = (1 - sigma) x0 + sigma n``,
so the probability-flow ODE has the closed-form solution ``x(0) = MU + S * x(1)`` and every
expectation is analytic.  diffusers' ``FlowMatchEulerDiscreteScheduler`` is the reference for
the sigmas and for an Euler loop.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodes.diffusion.sampling import (  # noqa: E402
    SAMPLERS,
    SCHEDULERS,
    FlowSchedule,
    flux_mu,
    flux_schedule,
    make_denoiser,
    make_schedule,
    sample,
    sampler_for,
    sigmas_for,
    time_shift,
)
from nodes.diffusion.sampling.ksampler import sample_sigmas  # noqa: E402

torch.set_num_threads(1)

S = 0.5
MU = torch.linspace(-1.0, 1.0, 3 * 4 * 4).reshape(1, 3, 4, 4)


def exact_velocity(x: torch.Tensor, t: torch.Tensor, mu: torch.Tensor = MU) -> torch.Tensor:
    """E[n - x0 | x] for x0 ~ N(mu, S^2), n ~ N(0, 1), x = (1 - t) x0 + t n (t = sigma here)."""
    t = t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    var = (1 - t) ** 2 * S**2 + t**2
    centred = x - (1 - t) * mu
    x0 = mu + (1 - t) * S**2 / var * centred
    n = t / var * centred
    return n - x0


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def fp32_tol(n_ops: int = 1) -> float:
    """Relative tolerance for float32 results that went through ``n_ops`` roundings."""
    return 8 * n_ops * torch.finfo(torch.float32).eps


# ------------------------------------------------------------------ schedules and shift


def test_time_shift_is_fluxs_exponential_shift():
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    mu = 0.83
    flux_form = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    torch.testing.assert_close(time_shift(math.exp(mu), t), flux_form, rtol=1e-12, atol=0)


def test_flux_mu_matches_diffusers_calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert flux_mu(256, 256) == pytest.approx(0.5, rel=1e-12)  # 256 image tokens
    assert flux_mu(1024, 1024) == pytest.approx(1.15, rel=1e-12)  # 4096 image tokens
    for w, h in ((512, 768), (64, 64), (1344, 768)):
        tokens = (w // 16) * (h // 16)
        assert flux_mu(w, h) == pytest.approx(calculate_shift(tokens, 256, 4096, 0.5, 1.15), rel=1e-12)


@pytest.mark.parametrize("steps", [1, 4, 8, 20, 50])
@pytest.mark.parametrize("mu", [0.5, 1.15, 0.7421875])
def test_simple_scheduler_gives_flux_pipeline_sigmas(steps, mu):
    """FluxPipeline's sigmas (linspace(1, 1/N, N), exp(mu)-shifted, then 0) are the `simple` scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                          base_image_seq_len=256, max_image_seq_len=4096)
    ref.set_timesteps(sigmas=torch.linspace(1.0, 1.0 / steps, steps).numpy(), mu=mu)
    ours = sigmas_for("simple", steps, flux_schedule(mu))
    assert ours.shape == ref.sigmas.shape
    torch.testing.assert_close(ours, ref.sigmas.float(), rtol=fp32_tol(4), atol=0)


@pytest.mark.parametrize("steps", [4, 9, 28])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_normal_scheduler_gives_diffusers_static_shift_sigmas(steps, shift):
    """With a fixed shift (FLUX-schnell: 1, SD3: 3) diffusers' default spacing is our `normal`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(steps)
    ours = sigmas_for("normal", steps, FlowSchedule(shift=shift, multiplier=1000.0))
    torch.testing.assert_close(ours, ref.sigmas.float(), rtol=fp32_tol(4), atol=0)
    # the model's timestep input for each sigma is diffusers' timestep
    sched = FlowSchedule(shift=shift, multiplier=1000.0)
    torch.testing.assert_close(sched.sigma_to_t(ours[:-1]), ref.timesteps.float(), rtol=fp32_tol(4), atol=0)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("steps", [1, 5, 30])
def test_every_scheduler_works_on_flow_models(name, steps):
    sched = flux_schedule(0.9)
    sig = sigmas_for(name, steps, sched)
    assert sig[-1] == 0 and bool((sig[:-1] > 0).all())
    assert bool((sig[1:] < sig[:-1]).all()), sig
    assert float(sig[0]) <= 1.0 + 1e-6
    if name in ("normal", "simple", "karras", "exponential", "beta"):
        assert float(sig[0]) == pytest.approx(1.0, rel=1e-6)


def test_beta_scheduler_is_denser_at_both_ends():
    for sched in (flux_schedule(1.15), make_schedule()):
        sig = sigmas_for("beta", 20, sched)
        table = sched.sigmas
        index = torch.stack([(table - s).abs().argmin() for s in sig[:-1]]).float()  # training timestep
        assert torch.equal(table[index.long()], sig[:-1])  # picked from the training table
        gaps = (index[:-1] - index[1:]).abs()
        assert gaps[0] < gaps[len(gaps) // 2] and gaps[-1] < gaps[len(gaps) // 2]


def test_flux_schedule_range_and_percent():
    sched = flux_schedule(1.15)
    assert sched.sigma_max == 1.0
    assert sched.sigma_min == pytest.approx(float(time_shift(math.exp(1.15), torch.tensor(1e-4))), rel=1e-6)
    assert sched.percent_to_sigma(0.0) == 1.0 and sched.percent_to_sigma(1.0) == 0.0
    assert sched.percent_to_sigma(0.5) == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 1), rel=1e-9)
    assert float(sched.t_to_sigma(sched.sigma_to_t(torch.tensor(0.37)))) == pytest.approx(
        float(time_shift(math.exp(1.15), torch.tensor(0.37))), rel=1e-6)


# ------------------------------------------------------------------ denoiser and samplers


def flow_denoiser(sched: FlowSchedule | None = None):
    sched = sched or flux_schedule(1.0)
    return make_denoiser(lambda x, t: exact_velocity(x, t / sched.multiplier), sched, "flow")


def test_flow_denoiser_is_x_minus_sigma_v_and_refuses_wrong_pairings():
    sched = FlowSchedule(shift=2.0, multiplier=1000.0)
    seen = {}

    def model(x, t):
        seen["t"] = t
        return torch.full_like(x, 3.0)

    den = make_denoiser(model, sched, "flow")
    x = torch.randn(2, 3, 4, 4)
    out = den(x, torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(out, x - torch.tensor([0.25, 0.5]).reshape(-1, 1, 1, 1) * 3.0)
    torch.testing.assert_close(seen["t"], torch.tensor([250.0, 500.0]))
    with pytest.raises(ValueError, match="does not fit"):
        make_denoiser(model, sched, "eps")
    with pytest.raises(ValueError, match="does not fit"):
        make_denoiser(model, make_schedule(), "flow")


def test_euler_loop_matches_flow_match_euler_scheduler():
    """Our Euler on x0 = x - sigma v against diffusers' scheduler.step on the raw velocity."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    steps, mu = 12, 0.8
    ref = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    ref.set_timesteps(sigmas=torch.linspace(1.0, 1.0 / steps, steps).numpy(), mu=mu)
    noise = torch.randn(MU.shape, generator=torch.Generator().manual_seed(3))
    x = noise.clone()
    for t in ref.timesteps:
        v = exact_velocity(x, (t / 1000).reshape(1))
        x = ref.step(v, t, x).prev_sample
    sched = flux_schedule(mu)
    ours = SAMPLERS["euler"](flow_denoiser(sched), noise.clone(), sigmas_for("simple", steps, sched))
    assert rel_err(ours, x) < fp32_tol(4 * steps)


def _flow_ode_error(sampler: str, steps: int) -> float:
    sched = flux_schedule(1.0)
    noise = torch.randn(MU.shape, generator=torch.Generator().manual_seed(11))
    sig = sigmas_for("simple", steps, sched)
    out = sampler_for(sampler, flow=True)(flow_denoiser(sched), noise.clone(), sig)
    return float((out - (MU + S * noise)).abs().max())


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim", "uni_pc", "uni_pc_bh2"])
def test_deterministic_samplers_solve_the_flow_ode(sampler):
    """Every ODE sampler maps noise n to MU + S n (the exact flow map) and gets closer with more steps."""
    coarse, fine = _flow_ode_error(sampler, 10), _flow_ode_error(sampler, 80)
    assert fine < 0.06, fine  # measured: euler 0.050 (first order), heun 0.0035, uni_pc 0.0009, lms 2e-5
    assert fine < coarse / 3


@pytest.mark.parametrize(("sampler", "steps"), [("euler_ancestral", 200), ("dpm_2_ancestral", 30)])
def test_ancestral_samplers_reach_the_data_distribution_on_flow_models(sampler, steps):
    """Flow variants re-mix noise so the result has the data's mean and spread (euler_ancestral is
    first order: its spread is 0.42 at 30 steps, 0.47 at 100); the variance-exploding versions
    (adding noise on top of the mixed latent) leave far too much noise."""
    n_items = 4000
    mu = torch.zeros(n_items, 1, 2, 2) + 0.3
    sched = flux_schedule(1.0)
    den = make_denoiser(lambda x, t: exact_velocity(x, t, mu), sched, "flow")
    sig = sigmas_for("simple", steps, sched)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(mu.shape, generator=gen)

    def noise(a, b):
        return torch.randn(mu.shape, generator=gen)

    fn = sampler_for(sampler, flow=True)
    out = fn(den, x, sig, noise_sampler=noise)
    assert float(out.mean()) == pytest.approx(0.3, abs=4 * S / math.sqrt(out.numel()))
    assert float(out.std()) == pytest.approx(S, rel=0.06)
    wrong = SAMPLERS[sampler](den, torch.randn(mu.shape, generator=gen), sig, noise_sampler=noise)
    assert float(wrong.std()) > 1.2 * S


def test_lcm_on_flow_models_mixes_the_prediction_with_noise():
    calls = []

    def den(x, sigma):
        calls.append(x.clone())
        return torch.full_like(x, 0.5)

    fresh = [torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    sig = torch.tensor([1.0, 0.6, 0.2, 0.0])
    out = sampler_for("lcm", flow=True)(den, fresh[0], sig, noise_sampler=lambda a, b: fresh.pop(1))
    torch.testing.assert_close(out, torch.full_like(out, 0.5))
    a, b = (torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in (1, 2))
    torch.testing.assert_close(calls[1], 0.4 * 0.5 + 0.6 * a)
    torch.testing.assert_close(calls[2], 0.8 * 0.5 + 0.2 * b)


def test_sde_samplers_without_flow_variant_are_refused_clearly():
    with pytest.raises(ValueError, match="not available for flow-matching models") as info:
        sampler_for("dpmpp_2m_sde", flow=True)
    # The fix offered is the catalogue's flow-capable list, not a hand-kept one.
    offered = str(info.value).partition("choose from")[2]
    assert "'dpmpp_3m_sde'" in offered and "'res_multistep'" in offered
    assert "'dpmpp_2m_sde'" not in offered and "'ddpm'" not in offered
    with pytest.raises(ValueError, match="not available for flow-matching models"):
        sample_sigmas(flow_denoiser(), torch.zeros(1, 3, 4, 4), torch.tensor([1.0, 0.0]), sampler="dpmpp_sde",
                      model_sampling=flux_schedule(1.0))


# ------------------------------------------------------------------ KSampler on flow models


def _ksample(latent, **kw):
    sched = kw.pop("sched", flux_schedule(1.0))
    return sample(flow_denoiser(sched), sched, latent, scheduler=kw.pop("scheduler", "simple"),
                  steps=kw.pop("steps", 8), seed=kw.pop("seed", 7), **kw)


def test_ksampler_mixes_noise_into_the_latent_for_img2img():
    sched = flux_schedule(1.0)
    latent = MU + 0.25
    seen = []

    def recording(x, sigma, **kw):
        seen.append((x.clone(), sigma.clone()))
        return flow_denoiser(sched)(x, sigma)

    sample(recording, sched, latent, scheduler="simple", steps=4, seed=9, denoise=0.5)
    x_first, sigma_first = seen[0]
    s0 = float(sigma_first[0])
    assert 0 < s0 < 1
    from nodes.diffusion.sampling import initial_noise

    noise = initial_noise(latent.shape, 9)
    torch.testing.assert_close(x_first, (1 - s0) * latent + s0 * noise, rtol=fp32_tol(2), atol=fp32_tol(2))


def test_txt2img_on_flow_model_reaches_the_exact_flow_map():
    from nodes.diffusion.sampling import initial_noise

    latent = torch.zeros(2, 3, 4, 4)
    out = _ksample(latent, steps=40, sampler="lms", seed=21)
    expected = MU + S * initial_noise(latent.shape, 21)
    assert float((out - expected).abs().max()) < 1e-3  # measured 2e-5


def test_two_stage_with_leftover_noise_equals_one_pass_on_flow_models():
    latent = torch.zeros(1, 3, 4, 4)
    full = _ksample(latent, steps=9, sampler="euler")
    stage1 = _ksample(latent, steps=9, sampler="euler", end_step=3, return_with_leftover_noise=True)
    stage2 = _ksample(stage1, steps=9, sampler="euler", start_step=3, add_noise=False)
    assert rel_err(stage2, full) < fp32_tol(40)
    clean = _ksample(latent, steps=9, sampler="euler", end_step=3)
    assert float((clean - stage1).abs().max()) > 0.1


def test_noise_mask_keeps_unmasked_region_exactly_on_flow_models():
    latent = MU.clone()
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    out = _ksample(latent, steps=6, sampler="euler_ancestral", noise_mask=mask)
    torch.testing.assert_close(out[..., 2:, :], latent[..., 2:, :], rtol=fp32_tol(4), atol=fp32_tol(4))
    assert float((out[..., :2, :] - latent[..., :2, :]).abs().max()) > 0.05
