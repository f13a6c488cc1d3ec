"""Schedules, schedulers, noise, guidance and the KSampler procedure.

Uses the exact posterior-mean denoiser of Gaussian data N(MU, S^2), so all
expectations are analytic and the tests run in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.diffusion.sampling import (
    SAMPLERS,
    SCHEDULERS,
    BrownianTreeNoiseSampler,
    NoiseSampler,
    cfg_denoiser,
    derive_seed,
    initial_noise,
    make_denoiser,
    make_schedule,
    sample,
    sigmas_for,
    slice_sigmas,
)
from tests.tolerance import assert_close

torch.set_num_threads(1)

SCHEDULE = make_schedule()
S = 0.5
MU = torch.linspace(-1.0, 1.0, 3 * 4 * 4).reshape(1, 3, 4, 4)


def exact_x0(x: torch.Tensor, sigma: torch.Tensor, mu: torch.Tensor = MU) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return (S**2 * x + sigma**2 * mu) / (S**2 + sigma**2)


def analytic_denoiser(x, sigma, **kwargs):
    return exact_x0(x, sigma)


def raw_unet(prediction: str):
    """A raw VP-space model returning eps, v or x0 of the analytic problem."""

    def model(x_in, t):
        sigma = SCHEDULE.t_to_sigma(t).reshape(-1, 1, 1, 1)
        x = x_in * (sigma**2 + 1) ** 0.5
        x0 = exact_x0(x, sigma.reshape(-1))
        eps = (x - x0) / sigma
        if prediction == "eps":
            return eps
        if prediction == "v":
            return (eps - sigma * x0) / (sigma**2 + 1) ** 0.5
        return x0

    return model


# ------------------------------------------------------------------ model sampling


def test_schedule_values_match_closed_form():
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    expected = np.sqrt((1 - ac) / ac)
    np.testing.assert_allclose(SCHEDULE.sigmas.numpy(), expected, rtol=2e-6)
    linear = make_schedule(beta_schedule="linear", linear_start=1e-4, linear_end=2e-2)
    ac_lin = np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000))
    np.testing.assert_allclose(linear.sigmas.numpy(), np.sqrt((1 - ac_lin) / ac_lin), rtol=2e-6)
    with pytest.raises(ValueError):
        make_schedule(beta_schedule="cosine-ish")


def test_sigma_t_roundtrip_and_interpolation():
    t = torch.tensor([0.0, 0.25, 10.5, 500.0, 998.75, 999.0])
    back = SCHEDULE.sigma_to_t(SCHEDULE.t_to_sigma(t))
    # t = interp(log sigma): log/exp round relative to log sigma (|log sigma| <= 3), and the slope dt/dlog sigma
    # reaches ~100 at small t, so t's error is relative to ~ 100 * 3 (reduction = 2: one interpolation each way)
    assert_close(back, t, scale=300.0, reduction=2)
    # halfway between two timesteps is the geometric mean of their sigmas
    s = SCHEDULE.t_to_sigma(torch.tensor(10.5))
    assert math.isclose(float(s), math.sqrt(float(SCHEDULE.sigmas[10] * SCHEDULE.sigmas[11])), rel_tol=1e-6)
    # quantized lookup snaps to the nearest training timestep
    assert float(SCHEDULE.sigma_to_t(SCHEDULE.t_to_sigma(torch.tensor(10.2)), quantize=True)) == 10.0


def test_percent_to_sigma():
    assert SCHEDULE.percent_to_sigma(0.0) == math.inf
    assert SCHEDULE.percent_to_sigma(1.0) == 0.0
    assert math.isclose(SCHEDULE.percent_to_sigma(0.5), float(SCHEDULE.t_to_sigma(499.5)), rel_tol=1e-6)
    assert SCHEDULE.percent_to_sigma(0.2) > SCHEDULE.percent_to_sigma(0.8)


@pytest.mark.parametrize("prediction", ["eps", "v", "sample"])
def test_make_denoiser_recovers_x0_for_each_prediction_type(prediction):
    denoiser = make_denoiser(raw_unet(prediction), SCHEDULE, prediction)
    gen = torch.Generator().manual_seed(0)
    sigma = torch.tensor([14.0, 3.0, 0.1])
    x = MU + sigma.reshape(-1, 1, 1, 1) * torch.randn((3, *MU.shape[1:]), generator=gen)
    # scaling in and out of VP space (sigma up to 14): a few elementwise roundings on values up to |x|
    assert_close(denoiser(x, sigma), exact_x0(x, sigma), scale=float(x.abs().max()), depth=4)
    with pytest.raises(ValueError):
        make_denoiser(raw_unet("eps"), SCHEDULE, "flow")  # type: ignore[arg-type]


# ------------------------------------------------------------------ schedulers


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("steps", [1, 4, 20])
def test_every_scheduler_is_decreasing_and_ends_in_zero(name, steps):
    sig = SCHEDULERS[name](SCHEDULE, steps)
    assert sig.dtype == torch.float32
    assert float(sig[-1]) == 0.0
    assert torch.all(sig[:-1] > sig[1:])
    if name != "ddim_uniform":
        assert len(sig) == steps + 1
    assert float(sig[0]) <= SCHEDULE.sigma_max * (1 + 1e-6)


def test_karras_closed_form():
    n, rho = 9, 7.0
    lo, hi = SCHEDULE.sigma_min, SCHEDULE.sigma_max
    expected = [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)
    ]
    np.testing.assert_allclose(SCHEDULERS["karras"](SCHEDULE, n)[:-1].numpy(), expected, rtol=1e-5)


def test_exponential_is_geometric():
    sig = SCHEDULERS["exponential"](SCHEDULE, 8)[:-1].double()
    ratios = sig[1:] / sig[:-1]
    torch.testing.assert_close(ratios, ratios[:1].expand_as(ratios), rtol=1e-5, atol=0)
    assert math.isclose(float(sig[0]), SCHEDULE.sigma_max, rel_tol=1e-5)
    assert math.isclose(float(sig[-1]), SCHEDULE.sigma_min, rel_tol=1e-5)


def test_normal_and_sgm_uniform_are_uniform_in_timestep():
    log_sigmas = np.log(SCHEDULE.sigmas.double().numpy())
    for steps in (5, 12):
        ts = np.linspace(999, 0, steps)
        expected = np.exp(np.interp(ts, np.arange(1000), log_sigmas))
        got = SCHEDULERS["normal"](SCHEDULE, steps)
        np.testing.assert_allclose(got[:-1].numpy(), expected, rtol=1e-5)
        assert math.isclose(float(got[0]), SCHEDULE.sigma_max, rel_tol=1e-6)
        assert math.isclose(float(got[-2]), SCHEDULE.sigma_min, rel_tol=1e-6)
        ts_sgm = np.linspace(999, 0, steps + 1)[:-1]
        expected_sgm = np.exp(np.interp(ts_sgm, np.arange(1000), log_sigmas))
        np.testing.assert_allclose(
            SCHEDULERS["sgm_uniform"](SCHEDULE, steps)[:-1].numpy(), expected_sgm, rtol=1e-5
        )


def test_simple_and_ddim_uniform_pick_training_sigmas():
    simple = SCHEDULERS["simple"](SCHEDULE, 10)
    assert_close(simple[:-1], SCHEDULE.sigmas[[999 - 100 * i for i in range(10)]])
    ddim = SCHEDULERS["ddim_uniform"](SCHEDULE, 10)
    assert_close(ddim[:-1], SCHEDULE.sigmas[list(range(901, 0, -100))])
    # 1000 // 7 = 142 -> timesteps 1, 143, ..., 995: eight of them (ComfyUI behaviour, documented)
    assert len(SCHEDULERS["ddim_uniform"](SCHEDULE, 7)) == 9


def test_sigmas_for_denoise_and_penultimate():
    full = sigmas_for("karras", 10, SCHEDULE)
    assert_close(full, SCHEDULERS["karras"](SCHEDULE, 10))
    half = sigmas_for("normal", 10, SCHEDULE, denoise=0.5)
    assert_close(half, SCHEDULERS["normal"](SCHEDULE, 20)[-11:])
    assert len(sigmas_for("normal", 10, SCHEDULE, denoise=0.3)) == 11  # int(10 / 0.3) = 33 step schedule
    assert len(sigmas_for("normal", 10, SCHEDULE, denoise=0.0)) == 0
    dropped = sigmas_for("karras", 10, SCHEDULE, discard_penultimate=True)
    k11 = SCHEDULERS["karras"](SCHEDULE, 11)
    assert_close(dropped, torch.cat([k11[:-2], k11[-1:]]))
    with pytest.raises(ValueError):
        sigmas_for("nope", 10, SCHEDULE)


# ------------------------------------------------------------------ noise


def test_initial_noise_is_seeded_per_item():
    a = initial_noise((3, 4, 8, 8), seed=42)
    b = initial_noise((3, 4, 8, 8), seed=42)
    assert torch.equal(a, b)
    for i in range(3):
        assert torch.equal(a[i : i + 1], initial_noise((1, 4, 8, 8), seed=42 + i))
    assert not torch.equal(a[0], a[1])
    half = initial_noise((3, 4, 8, 8), seed=42, dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, a.half())
    assert abs(float(initial_noise((1, 4, 64, 64), 0).std()) - 1) < 0.02


def test_noise_sampler_per_item_and_fresh_each_call():
    x = torch.zeros(3, 2, 4, 4)
    ns = NoiseSampler(x, [5, 6, 7])
    first, second = ns(1.0, 0.5), ns(0.5, 0.2)
    assert not torch.equal(first, second)
    alone = NoiseSampler(x[:1], [6])
    assert torch.equal(alone(), first[1:2]) and torch.equal(alone(), second[1:2])
    with pytest.raises(ValueError):
        NoiseSampler(x, [1])


def test_brownian_sampler_per_item_and_additive_increments():
    x = torch.zeros(3, 2, 4, 4)
    tree = BrownianTreeNoiseSampler(x, 0.1, 10.0, [1, 2, 3])
    alone = BrownianTreeNoiseSampler(x[:1], 0.1, 10.0, [2])
    torch.testing.assert_close(tree(5.0, 2.0)[1:2], alone(5.0, 2.0), rtol=0, atol=0)
    # increments over [2, 8] equal the sum of the increments over [2, 5] and [5, 8]
    whole = tree(8.0, 2.0) * 6**0.5
    parts = tree(8.0, 5.0) * 3**0.5 + tree(5.0, 2.0) * 3**0.5
    # Brownian-bridge arithmetic on times up to 10: roundings relative to t, a handful of them per increment
    assert_close(whole, parts, scale=10.0, depth=4)
    assert abs(float(tree(8.0, 2.0).std()) - 1) < 0.3
    assert derive_seed(1, "ancestral") != derive_seed(1, "brownian") != derive_seed(2, "brownian")


# ------------------------------------------------------------------ determinism of every sampler


def _ksample(latent, seed, sampler, **kw):
    denoiser = make_denoiser(raw_unet("eps"), SCHEDULE, "eps")
    return sample(denoiser, SCHEDULE, latent, sampler=sampler, scheduler="karras", steps=5, seed=seed, **kw)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_same_seed_same_result_and_batch_items_reproducible_alone(sampler):
    latent = torch.zeros(3, 3, 4, 4)
    a = _ksample(latent, 100, sampler)
    b = _ksample(latent, 100, sampler)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    single = _ksample(latent[:1], 101, sampler)
    assert torch.equal(a[1:2], single)
    assert not torch.equal(a[0], a[1])
    # the result is a plausible sample: near the data distribution N(MU, S^2)
    assert float((a - MU).abs().mean()) < 1.5


def _ode_error(sampler: str, steps: int) -> float:
    """Max error vs the closed-form probability-flow ODE solution for Gaussian data,
    x(sig) = MU + (x0 - MU) * sqrt(S^2 + sig^2) / sqrt(S^2 + sig0^2), integrating sigma_max -> sigma_min
    (no final jump to 0) in float64 so that only the discretisation error remains."""
    mu = MU.double()
    sigmas = SCHEDULERS["karras"](SCHEDULE, steps)[:-1].double()
    gen = torch.Generator().manual_seed(0)
    x = mu + float(sigmas[0]) * torch.randn(MU.shape, generator=gen, dtype=torch.float64)
    out = SAMPLERS[sampler](lambda x, sigma: exact_x0(x, sigma, mu), x, sigmas)
    r = math.sqrt(S**2 + float(sigmas[-1]) ** 2) / math.sqrt(S**2 + float(sigmas[0]) ** 2)
    return float((out - (mu + (x - mu) * r)).abs().max())


@pytest.mark.parametrize(
    ("sampler", "min_ratio"),
    # halving the step size must shrink the error by ~2^order (measured: 2.0, 4.5, 4.5, 4.3, 10, 21)
    [("euler", 1.8), ("heun", 3.5), ("dpm_2", 3.5), ("dpmpp_2m", 3.5), ("lms", 6.0), ("uni_pc", 10.0)],
)
def test_deterministic_samplers_converge_with_their_order(sampler, min_ratio):
    coarse, fine = _ode_error(sampler, 15), _ode_error(sampler, 30)
    assert fine < 0.07
    assert coarse / fine > min_ratio


# ------------------------------------------------------------------ KSampler semantics


def test_simple_equals_advanced_full_window():
    latent = torch.zeros(2, 3, 4, 4)
    simple = _ksample(latent, 3, "dpmpp_2m")
    advanced = _ksample(latent, 3, "dpmpp_2m", start_step=0, end_step=5)
    assert torch.equal(simple, advanced)
    beyond = _ksample(latent, 3, "dpmpp_2m", start_step=0, end_step=10_000)
    assert torch.equal(simple, beyond)


def test_two_stage_advanced_with_leftover_noise_equals_one_pass():
    latent = torch.zeros(1, 3, 4, 4)
    full = _ksample(latent, 9, "euler")
    stage1 = _ksample(latent, 9, "euler", end_step=2, return_with_leftover_noise=True)
    stage2 = _ksample(stage1, 9, "euler", start_step=2, add_noise=False)
    assert_close(stage2, full, depth=5)  # the same 5 Euler steps; only the hand-over may round differently
    # without leftover noise the stage-1 output is fully denoised, hence different
    clean = _ksample(latent, 9, "euler", end_step=2)
    assert float((clean - stage1).abs().max()) > 0.1


def test_slice_sigmas():
    sig = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    assert torch.equal(slice_sigmas(sig, end_step=2), torch.tensor([8.0, 4.0, 0.0]))
    assert torch.equal(slice_sigmas(sig, end_step=2, return_with_leftover_noise=True), sig[:3])
    assert torch.equal(slice_sigmas(sig, start_step=1), sig[1:])
    assert len(slice_sigmas(sig, start_step=4)) == 0
    latent = torch.randn(1, 3, 4, 4)
    assert torch.equal(_ksample(latent, 0, "euler", start_step=5), latent)


def test_img2img_lower_denoise_keeps_more_of_the_input():
    latent = MU + 3.0
    dist = [float((_ksample(latent, 1, "euler", denoise=d) - latent).abs().mean()) for d in (0.2, 0.5, 1.0)]
    assert dist[0] < dist[1] < dist[2]
    assert torch.equal(_ksample(latent, 1, "euler", denoise=0.0), latent)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m_sde"])
def test_noise_mask_keeps_unmasked_region_exactly(sampler):
    latent = MU.repeat(2, 1, 1, 1) + 2.0
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2] = 1.0
    out = _ksample(latent, 4, sampler, noise_mask=mask)
    assert torch.equal(out[..., 2:], latent[..., 2:])
    assert float((out[..., :2] - latent[..., :2]).abs().mean()) > 0.5
    # an image-resolution mask is resized to the latent
    big = torch.zeros(32, 32)
    big[:, 16:] = 1.0
    out2 = _ksample(latent, 4, sampler, noise_mask=big)
    assert torch.equal(out2[..., :1], latent[..., :1])


def test_callback_reports_progress_and_can_cancel():
    seen = []

    def record(step, total, x, denoised):
        seen.append((step, total, tuple(x.shape), tuple(denoised.shape)))

    _ksample(torch.zeros(1, 3, 4, 4), 0, "heun", callback=record)
    assert [s[:2] for s in seen] == [(i, 5) for i in range(5)]

    class Cancelled(Exception):
        pass

    calls = []

    def cancel(step, total, x, denoised):
        calls.append(step)
        if step == 2:
            raise Cancelled

    for name in SAMPLERS:
        calls.clear()
        with pytest.raises(Cancelled):
            _ksample(torch.zeros(1, 3, 4, 4), 0, name, callback=cancel)
        assert calls == [0, 1, 2], name


# ------------------------------------------------------------------ guidance


def _context_denoiser(calls):
    def denoiser(x, sigma, context):
        calls.append(x.shape[0])
        return exact_x0(x, sigma, mu=context)

    return denoiser


def test_cfg_combines_predictions_and_batches_when_possible():
    calls: list[int] = []
    base = _context_denoiser(calls)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([2.0, 2.0])
    cond = {"context": torch.full((2, 3, 1, 1), 1.0)}
    uncond = {"context": torch.full((2, 3, 1, 1), -1.0)}
    expected = base(x, sigma, **uncond) + 7.5 * (base(x, sigma, **cond) - base(x, sigma, **uncond))
    calls.clear()
    got = cfg_denoiser(base, cond, uncond, 7.5)(x, sigma)
    assert_close(got, expected, scale=7.5 * float(expected.abs().max()))  # cfg scale multiplies before the sum
    assert calls == [4]  # one doubled batch
    calls.clear()
    odd = {"context": torch.full((1, 3, 1, 1), -1.0)}  # batch-1 uncond cannot be concatenated
    got2 = cfg_denoiser(base, cond, odd, 7.5)(x, sigma)
    assert_close(got2, expected, scale=7.5 * float(expected.abs().max()))
    assert calls == [2, 2]
    calls.clear()
    assert_close(cfg_denoiser(base, cond, uncond, 1.0)(x, sigma), base(x, sigma, **cond))
    assert calls == [2, 2]  # scale 1: one call for cfg, one for the reference


def test_ksample_with_cfg_uses_guided_denoiser():
    calls: list[int] = []
    base = _context_denoiser(calls)
    latent = torch.zeros(1, 3, 4, 4)
    cond = {"context": torch.full((1, 3, 1, 1), 0.5)}
    uncond = {"context": torch.zeros(1, 3, 1, 1)}
    kw = dict(sampler="euler", scheduler="normal", steps=4, seed=0)
    out_cfg1 = sample(base, SCHEDULE, latent, cfg=1.0, cond_kwargs=cond, uncond_kwargs=uncond, **kw)
    out_cond = sample(base, SCHEDULE, latent, cond_kwargs=cond, **kw)
    assert torch.equal(out_cfg1, out_cond)
    out_cfg3 = sample(base, SCHEDULE, latent, cfg=3.0, cond_kwargs=cond, uncond_kwargs=uncond, **kw)
    # guidance extrapolates away from the unconditional mean (0) beyond the conditional one (0.5)
    assert float(out_cfg3.mean()) > float(out_cond.mean()) + 0.3
