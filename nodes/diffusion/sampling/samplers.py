"""k-diffusion-style samplers: short functions that integrate the probability-flow ODE (or SDE).

Every sampler has the same signature::

    fn(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=..., s_noise=1.0) -> x

* ``denoiser(x, sigma_batch, **extra_args) -> x0`` in the variance-exploding
  parametrisation (see :mod:`.model_sampling`); ``sigma_batch`` has shape ``[B]``.
* ``x`` is the starting latent, already noised to ``sigmas[0]``.
* ``sigmas`` is a decreasing 1-D tensor, normally ending in 0.
* ``callback(step, total, x, denoised)`` runs once per step after the model
  call; it may raise to cancel sampling (nothing here swallows exceptions).
* ``noise_sampler(sigma, sigma_next)`` gives unit Gaussian noise for the
  stochastic samplers; deterministic samplers accept and ignore it, and
  ``eta``/``s_noise`` too, so callers can treat all samplers alike.

The formulas are those published in k-diffusion (Crowson) and the cited
papers; the tests check them step-for-step against diffusers' schedulers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..catalogue import (  # noqa: F401 - re-exported: the sampling library's historical names
    BROWNIAN_SAMPLERS,
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    FLOW_UNSUPPORTED_SAMPLERS,
    FLOW_VARIANTS,
    SAMPLER_NAMES,
    STOCHASTIC_SAMPLERS,
    functions_for,
)
from .noise import BrownianTreeNoiseSampler

Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
NoiseFn = Callable[[Any, Any], torch.Tensor]
Sampler = Callable[..., torch.Tensor]


# ---------------------------------------------------------------- helpers


def _model(denoiser, x: torch.Tensor, sigma: torch.Tensor, extra_args: dict) -> torch.Tensor:
    return denoiser(x, sigma * x.new_ones([x.shape[0]]), **extra_args)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma = (x - x0) / sigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """Split a step sigma -> sigma_next into a deterministic step to ``sigma_down`` plus fresh noise
    of std ``sigma_up`` such that ``sigma_down^2 + sigma_up^2 = sigma_next^2``; eta=1 is DDPM-like."""
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    down = (sigma_next**2 - up**2) ** 0.5
    return down, up


def _default_noise(x: torch.Tensor) -> NoiseFn:
    """Unseeded fallback (torch's global RNG); the KSampler always passes a seeded sampler."""
    return lambda sigma, sigma_next: torch.randn_like(x)


def _default_brownian(x: torch.Tensor, sigmas: torch.Tensor) -> NoiseFn:
    positive = sigmas[sigmas > 0]
    seeds = torch.randint(0, 2**62, (x.shape[0],)).tolist()
    return BrownianTreeNoiseSampler(x, float(positive.min()), float(sigmas.max()), seeds)


def _steps(sigmas: torch.Tensor) -> int:
    return len(sigmas) - 1


# ---------------------------------------------------------------- first order


@torch.no_grad()
def euler(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2 without churn)."""
    extra_args = extra_args or {}
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def ddim(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0):
    """Deterministic DDIM (eta=0).

    In sigma space the DDIM update ``x_prev = sqrt(a') x0 + sqrt(1-a') eps`` is
    *exactly* an Euler step, so this is :func:`euler` (as in ComfyUI); use the
    ``ddim_uniform`` scheduler to visit DDIM's usual timesteps.
    """
    return euler(denoiser, x, sigmas, extra_args=extra_args, callback=callback)


@torch.no_grad()
def euler_ancestral(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0
):
    """Euler step down to ``sigma_down`` then add fresh noise back up to ``sigma_next``."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def lcm(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0):
    """Latent Consistency Model sampling: jump to the prediction, then re-noise to the next sigma."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


# ---------------------------------------------------------------- second order, single step


@torch.no_grad()
def heun(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0):
    """Heun's method (trapezoidal corrector); the last step to sigma=0 is plain Euler."""
    extra_args = extra_args or {}
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], _model(denoiser, x_2, sigmas[i + 1], extra_args))
        x = x + (d + d_2) / 2 * dt
    return x


def _log_midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.log() * 0.5 + b.log() * 0.5).exp()


@torch.no_grad()
def dpm_2(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0):
    """DPM-Solver-2 flavoured midpoint method: evaluate at the geometric mean sigma, step with that slope."""
    extra_args = extra_args or {}
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        mid = _log_midpoint(sigmas[i], sigmas[i + 1])
        x_2 = x + d * (mid - sigmas[i])
        d_2 = to_d(x_2, mid, _model(denoiser, x_2, mid, extra_args))
        x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def dpm_2_ancestral(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0
):
    """:func:`dpm_2` down to ``sigma_down``, then fresh noise up to ``sigma_next``."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
            continue
        mid = _log_midpoint(sigmas[i], down)
        x_2 = x + d * (mid - sigmas[i])
        d_2 = to_d(x_2, mid, _model(denoiser, x_2, mid, extra_args))
        x = x + d_2 * (down - sigmas[i])
        x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def dpmpp_sde(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0, r=0.5
):
    """DPM-Solver++ (stochastic, 2 model calls per step) with Brownian-tree noise.

    Works in ``t = -log(sigma)``; each step takes an ancestral half step to
    ``t + r h`` and then a full step using the blend ``(1 - 1/2r) x0 + 1/2r x0_mid``.
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_brownian(x, sigmas)
    n = _steps(sigmas)
    fac = 1 / (2 * r)
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        if s_next == 0:
            x = x + to_d(x, s, denoised) * (s_next - s)
            continue
        t, t_next = -s.log(), -s_next.log()
        h = t_next - t
        s_mid = (-(t + r * h)).exp()
        # half step to s_mid (ancestral)
        down, up = ancestral_step(s, s_mid, eta)
        x_2 = (down / s) * x - torch.expm1(down.log() - s.log()) * denoised
        x_2 = x_2 + noise_sampler(s, s_mid) * s_noise * up
        denoised_2 = _model(denoiser, x_2, s_mid, extra_args)
        # full step (ancestral)
        down, up = ancestral_step(s, s_next, eta)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (down / s) * x - torch.expm1(down.log() - s.log()) * denoised_d
        x = x + noise_sampler(s, s_next) * s_noise * up
    return x


# ---------------------------------------------------------------- multistep


def _lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial for node t_{i-j}.

    Computed exactly by polynomial integration (k-diffusion uses adaptive
    quadrature, which agrees to ~1e-10 for these low-degree polynomials).
    """
    poly = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            poly = poly * np.polynomial.Polynomial([-t[i - k], 1.0]) / (t[i - j] - t[i - k])
    antideriv = poly.integ()
    return float(antideriv(t[i + 1]) - antideriv(t[i]))


@torch.no_grad()
def lms(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0, order=4
):
    """Linear multistep (Adams-Bashforth in sigma) over the last ``order`` derivatives."""
    extra_args = extra_args or {}
    n = _steps(sigmas)
    t = sigmas.detach().cpu().to(torch.float64).numpy()
    ds: list[torch.Tensor] = []
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        cur = min(i + 1, order)
        coeffs = [_lms_coefficient(cur, t, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
    return x


@torch.no_grad()
def dpmpp_2m(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0
):
    """DPM-Solver++(2M): exponential integrator in ``t = -log(sigma)`` with a linear extrapolation of x0."""
    extra_args = extra_args or {}
    n = _steps(sigmas)
    old_denoised = None
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        if s_next == 0:
            x = denoised  # limit of the first-order update for sigma_next -> 0
        else:
            h = s.log() - s_next.log()
            if old_denoised is None:
                d = denoised
            else:
                r = (sigmas[i - 1].log() - s.log()) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s_next / s) * x - torch.expm1(-h) * d
        old_denoised = denoised
    return x


@torch.no_grad()
def dpmpp_2m_sde(
    denoiser,
    x,
    sigmas,
    *,
    extra_args=None,
    callback=None,
    noise_sampler=None,
    eta=1.0,
    s_noise=1.0,
    solver_type="midpoint",
):
    """DPM-Solver++(2M) SDE (midpoint or heun second-order correction) with Brownian-tree noise."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError("solver_type must be 'midpoint' or 'heun'")
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_brownian(x, sigmas)
    n = _steps(sigmas)
    old_denoised, h_last = None, None
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        h = None
        if s_next == 0:
            x = denoised
        else:
            h = s.log() - s_next.log()
            eta_h = eta * h
            one_minus = -torch.expm1(-h - eta_h)  # 1 - exp(-h - eta h)
            x = (s_next / s) * (-eta_h).exp() * x + one_minus * denoised
            if old_denoised is not None:
                diff = (denoised - old_denoised) * (h / h_last)
                if solver_type == "heun":
                    x = x + (one_minus / (-h - eta_h) + 1) * diff
                else:
                    x = x + 0.5 * one_minus * diff
            if eta:
                x = x + noise_sampler(s, s_next) * s_next * (-torch.expm1(-2 * eta_h)).sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def uni_pc(
    denoiser,
    x,
    sigmas,
    *,
    extra_args=None,
    callback=None,
    noise_sampler=None,
    eta=0.0,
    s_noise=1.0,
    order=3,
    variant="bh1",
):
    """UniPC (Zhao et al. 2023), multistep data-prediction predictor UniP-p plus corrector UniC.

    ``variant`` picks B(h): "bh1" is ``B(h) = h``, "bh2" is ``B(h) = e^h - 1``.
    The order warms up from 1, is lowered again for the final steps
    ("lower_order_final"), and the corrector reuses the model output at the
    predicted point, so UniPC costs one model call per step.  This is
    diffusers' ``UniPCMultistepScheduler`` transcribed to sigma space
    (alpha = 1, lambda = -log sigma), where the VP scale factors cancel.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError("variant must be 'bh1' or 'bh2'")
    extra_args = extra_args or {}
    n = _steps(sigmas)
    # step-size bookkeeping in float64 on the CPU (MPS has no float64); +inf at sigma 0
    lambdas = -sigmas.detach().cpu().to(torch.float64).log()

    def coefficients(k: int, h: torch.Tensor, rks: list[torch.Tensor]):
        """R (k x k Vandermonde in rks) and b_i = phi_i(h) * i! / B(h) of the UniPC linear system."""
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if variant == "bh1" else torch.expm1(hh)
        rk = torch.stack([*rks, torch.ones((), dtype=torch.float64)])
        rows, b, fact = [], [], 1
        for j in range(1, k + 1):
            rows.append(rk ** (j - 1))
            b.append(h_phi_k * fact / b_h)
            fact *= j + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        return torch.stack(rows), torch.stack(b), h_phi_1, b_h

    def history(idx: int, k: int, outputs: list[torch.Tensor], h: torch.Tensor):
        """Ratios r_j and scaled differences (m_j - m0)/r_j to the ``k-1`` outputs before ``idx``."""
        rks, d1s = [], []
        for j in range(1, k):
            rk = (lambdas[idx - j] - lambdas[idx]) / h
            rks.append(rk)
            d1s.append((outputs[-(j + 1)] - outputs[-1]) / float(rk))
        return rks, d1s

    outputs: list[torch.Tensor] = []  # x0 predictions, newest last
    last_x, last_order = None, 0
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        if last_x is not None:  # UniC: correct x_i using the model output evaluated at it
            h = lambdas[i] - lambdas[i - 1]
            rks, d1s = history(i - 1, last_order, outputs, h)
            r_mat, b, h_phi_1, b_h = coefficients(last_order, h, rks)
            rhos = (
                torch.full((1,), 0.5, dtype=torch.float64)
                if last_order == 1
                else torch.linalg.solve(r_mat, b)
            )
            m0 = outputs[-1]
            res = sum((float(rho) * d for rho, d in zip(rhos[:-1], d1s, strict=True)), torch.zeros_like(x))
            x = (sigmas[i] / sigmas[i - 1]) * last_x - float(h_phi_1) * m0
            x = x - float(b_h) * (res + float(rhos[-1]) * (denoised - m0))
        outputs.append(denoised)
        outputs = outputs[-order:]
        k = min(order, n - i, len(outputs))
        last_x, last_order = x, k
        if sigmas[i + 1] == 0:
            x = denoised  # limit of the order-1 predictor as sigma_next -> 0
            continue
        # UniP: predict x_{i+1}
        h = lambdas[i + 1] - lambdas[i]
        rks, d1s = history(i, k, outputs, h)
        r_mat, b, h_phi_1, b_h = coefficients(k, h, rks)
        pred = x * (sigmas[i + 1] / sigmas[i]) - float(h_phi_1) * denoised
        if k >= 2:
            rhos = (
                torch.full((1,), 0.5, dtype=torch.float64)
                if k == 2
                else torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
            )
            pred = pred - float(b_h) * sum(float(rho) * d for rho, d in zip(rhos, d1s, strict=True))
        x = pred
    return x


@torch.no_grad()
def uni_pc_bh2(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0
):
    """:func:`uni_pc` with ``B(h) = e^h - 1``."""
    return uni_pc(denoiser, x, sigmas, extra_args=extra_args, callback=callback, variant="bh2")


# ---------------------------------------------------------------- samplers of the transformer families
#
# ``res_multistep`` (the official Z-Image workflow's sampler), ``ddpm``, ``dpmpp_2s_ancestral`` and
# ``dpmpp_3m_sde``, with ComfyUI's formulas (k-diffusion's where ComfyUI kept them).  For models whose
# noisy latent is the mix ``(1 - sigma) x0 + sigma noise``: ``res_multistep`` (eta 0) is used as is,
# ``dpmpp_2s_ancestral`` and ``dpmpp_3m_sde`` have the variants ``dpmpp_2s_ancestral_rf`` and
# ``dpmpp_3m_sde_rf``, and ``ddpm`` has none (its posterior is variance-preserving).


def _phi1(t: torch.Tensor) -> torch.Tensor:
    return torch.expm1(t) / t


def _phi2(t: torch.Tensor) -> torch.Tensor:
    return (_phi1(t) - 1.0) / t


@torch.no_grad()
def res_multistep(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0, s_noise=1.0
):
    """RES second-order multistep (Zhang et al. 2023, arXiv 2308.02157) in ``t = -log(sigma)``.

    Step ``h`` from ``sigma_i`` to ``sigma_down``: ``x <- e^{-h} x + h (b1 D_i + b2 D_{i-1})`` with
    ``b1 = phi1(-h) - phi2(-h)/c2``, ``b2 = phi2(-h)/c2`` and ``c2`` the previous step's length
    relative to ``h`` (negative: it lies behind).  The first step, and a step to sigma 0, are
    Euler.  ``eta = 0`` (ComfyUI's ``res_multistep``) is deterministic, so the same function
    serves flow models; ``eta > 0`` adds ancestral noise in the variance-exploding form.
    """
    extra_args = extra_args or {}
    if eta:
        noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    old_denoised, old_down = None, None
    for i in range(n):
        s = sigmas[i]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        down, up = ancestral_step(s, sigmas[i + 1], eta)
        if down == 0 or old_denoised is None:
            x = x + to_d(x, s, denoised) * (down - s)
        else:
            t, t_old, t_next, t_prev = -s.log(), -old_down.log(), -down.log(), -sigmas[i - 1].log()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            p1, p2 = _phi1(-h), _phi2(-h)
            b1 = torch.nan_to_num(p1 - p2 / c2, nan=0.0)
            b2 = torch.nan_to_num(p2 / c2, nan=0.0)
            x = torch.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        if eta and sigmas[i + 1] > 0:
            x = x + noise_sampler(s, sigmas[i + 1]) * s_noise * up
        old_denoised, old_down = denoised, down
    return x


@torch.no_grad()
def ddpm(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0):
    """Ancestral DDPM (Ho et al. 2020): sample the posterior ``q(x_prev | x, x0)`` ("fixed small" variance).

    Works on the variance-preserving latent ``x / sqrt(1 + sigma^2)`` with
    ``alpha_bar = 1 / (1 + sigma^2)``, the ratio ``alpha = alpha_bar / alpha_bar_next`` playing the
    step's ``1 - beta`` (ComfyUI's formula; diffusers' DDPMScheduler for any timestep spacing).
    The ``1 - alpha_bar`` terms are written as ``sigma^2 / (1 + sigma^2)`` to avoid cancellation at
    small sigma.  ``eta``/``s_noise`` are ignored (the posterior fixes the noise), as in ComfyUI.
    Variance-exploding models only: the posterior is different for flow models.
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        s, s_next = sigmas[i].double(), sigmas[i + 1].double()
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        eps = (x - denoised) / sigmas[i]
        one_minus_abar = s**2 / (1 + s**2)
        abar_next = 1 / (1 + s_next**2)
        one_minus_alpha = (s**2 - s_next**2) / (1 + s**2)  # 1 - abar / abar_next
        alpha = 1 - one_minus_alpha
        x_vp = x / (1 + s**2).sqrt().float()
        mu = (x_vp - float(one_minus_alpha / one_minus_abar.sqrt()) * eps) / float(alpha.sqrt())
        if s_next > 0:
            var = one_minus_alpha * (1 - abar_next) / one_minus_abar
            mu = mu + noise_sampler(sigmas[i], sigmas[i + 1]) * float(var.sqrt())
            x = mu / float(abar_next.sqrt())
        else:
            x = mu
    return x


@torch.no_grad()
def dpmpp_2s_ancestral(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0
):
    """DPM-Solver++(2S) (Lu et al. 2022) to ``sigma_down`` via the log-midpoint, then ancestral noise.

    Two model calls per step; the step to sigma 0 is Euler.
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        s = sigmas[i]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        down, up = ancestral_step(s, sigmas[i + 1], eta)
        if down == 0:
            x = x + to_d(x, s, denoised) * (down - s)
        else:
            h = s.log() - down.log()
            s_mid = (s.log() - 0.5 * h).exp()
            x_2 = (s_mid / s) * x - torch.expm1(-0.5 * h) * denoised
            denoised_2 = _model(denoiser, x_2, s_mid, extra_args)
            x = (down / s) * x - torch.expm1(-h) * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(s, sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def dpmpp_2s_ancestral_rf(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0
):
    """:func:`dpmpp_2s_ancestral` for flow models (ComfyUI's ``_RF`` variant).

    The midpoint is taken in the flow half-log-SNR ``lambda = log((1 - sigma) / sigma)``; the
    updates ``x <- (s'/s) x + (1 - s'/s) D`` are the exact first-order exponential-integrator steps
    of a flow model.  Noise is re-mixed by :func:`ancestral_step_rf`.  A step starting at sigma 1 (where lambda is
    infinite) evaluates the midpoint at 0.9999, as ComfyUI.
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        down, keep, std = ancestral_step_rf(s, s_next, eta)
        if s_next == 0:
            x = x + to_d(x, s, denoised) * (down - s)
            continue
        if s >= 1.0:
            s_mid = torch.full_like(s, 0.9999)
        else:
            lam, lam_down = ((1 - s) / s).log(), ((1 - down) / down).log()
            s_mid = torch.sigmoid(-(lam + 0.5 * (lam_down - lam)))
        ratio = s_mid / s
        denoised_2 = _model(denoiser, ratio * x + (1 - ratio) * denoised, s_mid, extra_args)
        ratio = down / s
        x = ratio * x + (1 - ratio) * denoised_2
        if eta:
            x = keep * x + noise_sampler(s, s_next) * s_noise * std
    return x


def _dpmpp_3m_sde(denoiser, x, sigmas, lambda_fn, alpha_fn, extra_args, callback, noise_sampler, eta, s_noise):
    """DPM-Solver++(3M) SDE in a half-log-SNR ``lambda`` with signal scale ``alpha`` (1 for VE, 1 - sigma for flow)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_brownian(x, sigmas)
    n = _steps(sigmas)
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = _model(denoiser, x, s, extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        h = None
        if s_next == 0:
            x = denoised
        else:
            h = lambda_fn(s_next) - lambda_fn(s)
            h_eta = h * (eta + 1)
            alpha_t = alpha_fn(s_next)
            x = (s_next / s) * (-h * eta).exp() * x - alpha_t * torch.expm1(-h_eta) * denoised
            phi_2 = torch.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                x = x + (alpha_t * phi_2) * (denoised - denoised_1) / (h_1 / h)
            if eta and s_noise:
                x = x + noise_sampler(s, s_next) * s_next * (-torch.expm1(-2 * h * eta)).sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def dpmpp_3m_sde(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE (k-diffusion): third-order multistep in ``-log(sigma)``, Brownian-tree noise.

    Warms up through first and second order; ``eta = 0`` is the deterministic DPM-Solver++(3M).
    """
    return _dpmpp_3m_sde(denoiser, x, sigmas, lambda s: -s.log(), lambda s: torch.ones_like(s),
                         extra_args, callback, noise_sampler, eta, s_noise)  # fmt: skip


@torch.no_grad()
def dpmpp_3m_sde_rf(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0,
    first_sigma: float = 1.0 - 1e-4,
):  # fmt: skip
    """:func:`dpmpp_3m_sde` for flow models: ``lambda = log((1 - sigma) / sigma)``, ``alpha = 1 - sigma``.

    A schedule starting at sigma >= 1 (infinite lambda) starts at ``first_sigma`` instead; ComfyUI
    uses its model sampling's ``percent_to_sigma(1e-4)``, which is ``1 - 1e-4`` without shift
    (pass the shifted value for bit-level agreement; the difference is in the fourth decimal of sigma).
    """
    if len(sigmas) and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = first_sigma
    return _dpmpp_3m_sde(denoiser, x, sigmas, lambda s: ((1 - s) / s).log(), lambda s: 1 - s,
                         extra_args, callback, noise_sampler, eta, s_noise)  # fmt: skip


# Dispatch table, noise kinds and schedule quirks all come from the catalogue (one row per sampler).
SAMPLERS: dict[str, Sampler] = functions_for(SAMPLER_NAMES, globals(), "sampler")
# ---------------------------------------------------------------- flow-matching (rectified-flow) variants
#
# On a flow model ``x = (1 - sigma) x0 + sigma * noise``: the deterministic samplers above
# integrate the right ODE unchanged (their derivative ``(x - x0) / sigma`` is the velocity),
# but "add noise of std sigma_up" is wrong, because noise and signal are mixed, not summed.
# These variants step down to ``sigma_down`` and then mix fresh noise back in so that the
# result has exactly the marginal of ``sigma_next`` (the formulas ComfyUI uses for CONST models).


def ancestral_step_rf(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """(sigma_down, signal scale, noise std) of one ancestral flow step ``sigma -> sigma_next``.

    After a deterministic step to ``sigma_down`` (the point ``(1 - d) x0 + d n``), scaling by
    ``(1 - sigma_next) / (1 - d)`` and adding fresh noise of the returned std lands on the
    marginal at ``sigma_next``.  ``eta = 0`` gives ``sigma_down = sigma_next`` and no noise."""
    down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    scale = (1 - sigma_next) / (1 - down)
    std = (sigma_next**2 - down**2 * scale**2).clamp(min=0) ** 0.5
    return down, scale, std


@torch.no_grad()
def euler_ancestral_rf(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0
):
    """:func:`euler_ancestral` for flow models: Euler to ``sigma_down``, then re-mix noise."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        down, scale, std = ancestral_step_rf(sigmas[i], sigmas[i + 1], eta)
        x = x + to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        if eta:
            x = scale * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * std
    return x


@torch.no_grad()
def dpm_2_ancestral_rf(
    denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0
):
    """:func:`dpm_2_ancestral` for flow models (midpoint step to ``sigma_down``, then re-mix noise)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        down, scale, std = ancestral_step_rf(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
            continue
        mid = _log_midpoint(sigmas[i], down)
        x_2 = x + d * (mid - sigmas[i])
        d_2 = to_d(x_2, mid, _model(denoiser, x_2, mid, extra_args))
        x = x + d_2 * (down - sigmas[i])
        x = scale * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * std
    return x


@torch.no_grad()
def lcm_rf(denoiser, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0, s_noise=1.0):
    """:func:`lcm` for flow models: jump to the prediction, then mix it with noise at ``sigma_next``."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or _default_noise(x)
    n = _steps(sigmas)
    for i in range(n):
        denoised = _model(denoiser, x, sigmas[i], extra_args)
        if callback is not None:
            callback(i, n, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = (1 - sigmas[i + 1]) * x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


#: Replacements used on flow-matching models (noise is mixed in, not added), from the catalogue.
FLOW_SAMPLERS: dict[str, Sampler] = {
    name: functions_for((variant,), globals(), "flow sampler")[variant] for name, variant in FLOW_VARIANTS.items()
}


def sampler_for(name: str, *, flow: bool = False) -> Sampler:
    """The sampling function for ``name`` on a variance-exploding (default) or flow model."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")
    if flow:
        if name in FLOW_UNSUPPORTED_SAMPLERS:
            offered = [n for n in SAMPLER_NAMES if n not in FLOW_UNSUPPORTED_SAMPLERS]
            raise ValueError(f"sampler {name!r} is not available for flow-matching models (FLUX, SD3, "
                             f"Z-Image); choose from {offered}")
        return FLOW_SAMPLERS.get(name, SAMPLERS[name])
    return SAMPLERS[name]
