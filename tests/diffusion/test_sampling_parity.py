"""Step-for-step parity of the samplers with diffusers' schedulers.

Both sides drive the same raw "UNet": the exact eps-prediction of a Gaussian
data distribution N(MU, S^2), computed from the VP input and the
(fractional) training timestep.  Our sampler sees it through
``make_denoiser``; diffusers sees it through its own ``scale_model_input`` /
timestep conventions.  We read the sigmas diffusers visits after
``set_timesteps`` and hand the same sigmas to our sampler, so any difference
is a difference in the update formulas.
"""

from __future__ import annotations

import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from nodes.diffusion.sampling import (  # noqa: E402
    SAMPLERS,
    BrownianTreeNoiseSampler,
    make_denoiser,
    make_schedule,
)

torch.set_num_threads(1)
# diffusers schedulers trip numpy 2 deprecation warnings on every step; they are not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCHEDULE = make_schedule()
S = 0.5
MU = torch.linspace(-1.0, 1.0, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
SD_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
RTOL = 1e-4  # relative max-abs error allowed for deterministic parity


def exact_x0(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Posterior mean E[x0 | x0 + sigma n = x] for x0 ~ N(MU, S^2)."""
    return (S**2 * x + sigma**2 * MU) / (S**2 + sigma**2)


def raw_unet(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """VP-space eps prediction at training timestep t (fractional allowed), as a real UNet would give."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    sigma = SCHEDULE.t_to_sigma(t).reshape(-1, 1, 1, 1)
    x = x_in * (sigma**2 + 1) ** 0.5
    return (x - exact_x0(x, sigma)) / sigma


def raw_unet_v(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The same model with v-prediction output: v = alpha * eps - sigma_vp * x0."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    sigma = SCHEDULE.t_to_sigma(t).reshape(-1, 1, 1, 1)
    x = x_in * (sigma**2 + 1) ** 0.5
    x0 = exact_x0(x, sigma)
    return ((x - x0) / sigma - sigma * x0) / (sigma**2 + 1) ** 0.5


DENOISER = make_denoiser(raw_unet, SCHEDULE, "eps")


def start_latent(sigma0: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    return MU + sigma0 * torch.randn(MU.shape, generator=gen)


def run_diffusers(
    sched,
    x_k: torch.Tensor,
    vp: bool,
    generator: torch.Generator | None = None,
    final_sigma: float = 0.0,
    model=raw_unet,
):
    """Drive a diffusers scheduler; ``x_k`` is the k-space start, converted to VP for VP schedulers."""
    sample = x_k
    if vp:
        ac0 = sched.alphas_cumprod[int(sched.timesteps[0])]
        sample = x_k * ac0.sqrt()
    kwargs = {"generator": generator} if generator is not None else {}
    for t in sched.timesteps:
        model_in = sched.scale_model_input(sample, t)
        out = model(model_in, t.to(torch.float32).expand(sample.shape[0]))
        sample = sched.step(out, t, sample, **kwargs).prev_sample
    if vp and final_sigma:  # back to k-space: x = x_vp / alpha
        sample = sample * (1 + final_sigma**2) ** 0.5
    return sample


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def k_sigmas(sched) -> torch.Tensor:
    return torch.unique_consecutive(sched.sigmas.to(torch.float32))


def discrete_sigmas(timesteps) -> torch.Tensor:
    """Sigmas of integer training timesteps, followed by 0 (for DDIM / LCM which have no sigma list)."""
    ts = torch.as_tensor(timesteps).long()
    return torch.cat([SCHEDULE.sigmas[ts], torch.zeros(1)])


def generator_noise(seed: int):
    """A noise sampler that draws exactly what diffusers' ``randn_tensor(generator=...)`` draws."""
    gen = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(MU.shape, generator=gen)


# (sampler name, diffusers class, extra config, steps)
K_SPACE_CASES = [
    ("euler", "EulerDiscreteScheduler", {}, 12),
    ("euler", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, 9),
    ("heun", "HeunDiscreteScheduler", {}, 8),
    ("dpm_2", "KDPM2DiscreteScheduler", {}, 8),
    ("lms", "LMSDiscreteScheduler", {}, 12),
]


@pytest.mark.parametrize(("name", "cls", "config", "steps"), K_SPACE_CASES)
def test_deterministic_k_space_parity(name, cls, config, steps):
    sched = getattr(diffusers, cls)(**SD_CONFIG, **config)
    sched.set_timesteps(steps)
    sigmas = k_sigmas(sched)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS[name](DENOISER, x.clone(), sigmas)
    ref = run_diffusers(sched, x.clone(), vp=False)
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


@pytest.mark.parametrize("steps", [6, 15])
def test_dpmpp_2m_parity(steps):
    sched = diffusers.DPMSolverMultistepScheduler(
        **SD_CONFIG, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float32)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["dpmpp_2m"](DENOISER, x.clone(), sigmas)
    ref = run_diffusers(sched, x.clone(), vp=True)
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_ddim_parity_with_ddim_uniform_schedule():
    """DDIM (eta=0, "leading" spacing, steps_offset=1) == our ddim on the ddim_uniform sigmas."""
    from nodes.diffusion.sampling.schedulers import ddim_uniform

    steps = 10
    sched = diffusers.DDIMScheduler(**SD_CONFIG, steps_offset=1, set_alpha_to_one=True, clip_sample=False)
    sched.set_timesteps(steps)
    sigmas = discrete_sigmas(sched.timesteps)
    torch.testing.assert_close(sigmas, ddim_uniform(SCHEDULE, steps), rtol=1e-6, atol=0)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["ddim"](DENOISER, x.clone(), sigmas)
    ref = run_diffusers(sched, x.clone(), vp=True)
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


@pytest.mark.parametrize(
    ("variant", "order", "final"),
    [
        ("bh2", 2, "zero"),
        ("bh2", 3, "zero"),
        ("bh2", 3, "sigma_min"),
        ("bh1", 2, "sigma_min"),
        ("bh1", 3, "sigma_min"),
    ],
)
def test_uni_pc_parity(variant, order, final):
    """diffusers' bh1 variant yields NaN when the last sigma is 0 (B(h) = h is infinite there), so bh1
    is compared on a schedule ending at sigma_min; our sampler returns x0 for a final step to 0."""
    sched = diffusers.UniPCMultistepScheduler(
        **SD_CONFIG, solver_type=variant, solver_order=order, final_sigmas_type=final
    )
    steps = 10
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float32)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["uni_pc"](DENOISER, x.clone(), sigmas, order=order, variant=variant)
    ref = run_diffusers(sched, x.clone(), vp=True, final_sigma=float(sigmas[-1]))
    assert torch.isfinite(ref).all()
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_euler_ancestral_parity_with_shared_noise():
    sched = diffusers.EulerAncestralDiscreteScheduler(**SD_CONFIG)
    sched.set_timesteps(10)
    sigmas = k_sigmas(sched)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["euler_ancestral"](DENOISER, x.clone(), sigmas, noise_sampler=generator_noise(7))
    ref = run_diffusers(sched, x.clone(), vp=False, generator=torch.Generator().manual_seed(7))
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_dpm_2_ancestral_parity_with_shared_noise():
    sched = diffusers.KDPM2AncestralDiscreteScheduler(**SD_CONFIG)
    sched.set_timesteps(8)
    sigmas = k_sigmas(sched)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["dpm_2_ancestral"](DENOISER, x.clone(), sigmas, noise_sampler=generator_noise(3))
    ref = run_diffusers(sched, x.clone(), vp=False, generator=torch.Generator().manual_seed(3))
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_dpmpp_2m_sde_parity_with_shared_noise():
    sched = diffusers.DPMSolverMultistepScheduler(
        **SD_CONFIG, algorithm_type="sde-dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    sched.set_timesteps(10)
    sigmas = sched.sigmas.to(torch.float32)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["dpmpp_2m_sde"](DENOISER, x.clone(), sigmas, noise_sampler=generator_noise(5))
    ref = run_diffusers(sched, x.clone(), vp=True, generator=torch.Generator().manual_seed(5))
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_dpmpp_sde_parity_with_same_brownian_tree():
    sched = diffusers.DPMSolverSDEScheduler(**SD_CONFIG, noise_sampler_seed=11)
    sched.set_timesteps(6)
    sigmas = k_sigmas(sched)
    x = start_latent(float(sigmas[0]))[:1]
    positive = sigmas[sigmas > 0]
    noise = BrownianTreeNoiseSampler(x, float(positive.min()), float(sigmas.max()), [11])
    global MU
    mu_saved, MU = MU, MU[:1]
    try:
        ours = SAMPLERS["dpmpp_sde"](DENOISER, x.clone(), sigmas, noise_sampler=noise)
        ref = run_diffusers(sched, x.clone(), vp=False)
    finally:
        MU = mu_saved
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_lcm_parity_with_shared_noise():
    """diffusers' LCM also applies the consistency boundary scalings c_skip/c_out (timestep_scaling=10),
    which at the visited timesteps (>= 99) are 1 - c_out < 1e-6 and c_skip < 3e-6; ComfyUI folds those into
    the model wrapper.  So this is parity up to that documented difference."""
    sched = diffusers.LCMScheduler(**SD_CONFIG)
    sched.set_timesteps(4)
    sigmas = discrete_sigmas(sched.timesteps)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS["lcm"](DENOISER, x.clone(), sigmas, noise_sampler=generator_noise(9))
    ref = run_diffusers(sched, x.clone(), vp=True, generator=torch.Generator().manual_seed(9))
    err = rel_err(ours, ref)
    print(f"rel_err={err:.2e}")
    assert err < RTOL


def test_schedule_matches_diffusers_sigmas():
    sched = diffusers.EulerDiscreteScheduler(**SD_CONFIG)
    ref = ((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5
    # diffusers forms 1 - alphas_cumprod in float32 (1e-5 relative rounding near t=0); we use float64
    torch.testing.assert_close(SCHEDULE.sigmas, ref.to(torch.float32), rtol=2e-5, atol=0)
    assert math.isclose(SCHEDULE.sigma_max, 14.6146, rel_tol=1e-4)
    assert math.isclose(SCHEDULE.sigma_min, 0.0292, rel_tol=1e-2)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_v_prediction_parity(name):
    if name == "euler":
        sched = diffusers.EulerDiscreteScheduler(**SD_CONFIG, prediction_type="v_prediction")
        vp = False
    else:
        sched = diffusers.DPMSolverMultistepScheduler(
            **SD_CONFIG, prediction_type="v_prediction", final_sigmas_type="zero"
        )
        vp = True
    sched.set_timesteps(10)
    sigmas = k_sigmas(sched)
    x = start_latent(float(sigmas[0]))
    ours = SAMPLERS[name](make_denoiser(raw_unet_v, SCHEDULE, "v"), x.clone(), sigmas)
    ref = run_diffusers(sched, x.clone(), vp=vp, model=raw_unet_v)
    assert rel_err(ours, ref) < RTOL


def test_harness_tells_samplers_apart():
    """Negative control: the comparison is sharp enough that a different solver fails it by far."""
    sched = diffusers.HeunDiscreteScheduler(**SD_CONFIG)
    sched.set_timesteps(8)
    sigmas = k_sigmas(sched)
    x = start_latent(float(sigmas[0]))
    ref = run_diffusers(sched, x.clone(), vp=False)
    for other in ("euler", "dpm_2", "lms"):
        assert rel_err(SAMPLERS[other](DENOISER, x.clone(), sigmas), ref) > 100 * RTOL
