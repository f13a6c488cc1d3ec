"""Sampler step time: our KSampler path vs a plain diffusers UNet loop on the same weights.

Run: .venv/bin/python bench/sampler.py [--channels 64] [--size 32] [--steps 8]

Both sides: the same SD1-layout UNet weights (ours loaded directly, diffusers'
converted with its own LDM converter), batch 1 with classifier-free guidance
(cond + uncond in one batch of 2), Euler, fp32 on CPU, inference mode.
Prints per-step median/min/max and the ratio ours/diffusers (target <= 1.0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._util import emit_summary, machine  # noqa: E402
from nodes.diffusion.models.unet import UNetModel  # noqa: E402
from nodes.diffusion.sampling.ksampler import sample  # noqa: E402
from nodes.diffusion.sampling.model_sampling import make_denoiser, make_schedule  # noqa: E402
from nodes.diffusion.sampling.schedulers import sigmas_for  # noqa: E402
from tests.diffusion.ldm_fixtures import diffusers_unet, randomize_, tiny_unet_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=32, help="latent size")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(tiny_unet_config("sd1"), model_channels=args.channels, context_dim=64, num_heads=4)
    ours = randomize_(UNetModel(cfg), 0).eval().requires_grad_(False)
    ref = diffusers_unet(cfg, ours.state_dict())
    schedule = make_schedule()
    ctx = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    unc = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(2))
    latent = torch.zeros(1, 4, args.size, args.size)

    def ours_run() -> None:
        den = make_denoiser(lambda x, t, context: ours(x, t, context), schedule, "eps")
        with torch.inference_mode():
            sample(den, schedule, latent, sampler="euler", scheduler="normal", steps=args.steps, seed=0, cfg=5.0,
                   cond_kwargs={"context": ctx}, uncond_kwargs={"context": unc})

    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    sigmas = sigmas_for("normal", args.steps, schedule).numpy()

    def diffusers_run() -> None:
        sched.set_timesteps(sigmas=sigmas[:-1].tolist())
        x = torch.randn(1, 4, args.size, args.size, generator=torch.Generator().manual_seed(0)) * sched.init_noise_sigma
        both = torch.cat([ctx, unc])
        with torch.inference_mode():
            for t in sched.timesteps:
                inp = sched.scale_model_input(torch.cat([x, x]), t)
                eps = ref(inp, t, encoder_hidden_states=both).sample
                c, u = eps.chunk(2)
                x = sched.step(u + 5.0 * (c - u), t, x).prev_sample

    results = {}
    for name, fn in (("nodegraph", ours_run), ("diffusers", diffusers_run)):
        fn()  # warm-up
        per_step = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            per_step.append((time.perf_counter() - t0) / args.steps)
        results[name] = per_step
    # Interleave a second round so drift on a shared machine hits both sides alike.
    for name, fn in (("diffusers", diffusers_run), ("nodegraph", ours_run)):
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            results[name].append((time.perf_counter() - t0) / args.steps)
    print(f"machine: {machine()}, torch threads {args.threads}")
    print(f"UNet model_channels={args.channels}, latent {args.size}x{args.size}, {args.steps} steps, CFG batch 2")
    for name, xs in results.items():
        s = sorted(xs)
        print(f"  {name:10s} per step: min {s[0]*1e3:.1f} ms  median {statistics.median(s)*1e3:.1f} ms  "
              f"max {s[-1]*1e3:.1f} ms")
    ratio = statistics.median(results["nodegraph"]) / statistics.median(results["diffusers"])
    print(f"  ratio nodegraph/diffusers (median): {ratio:.3f}  (target <= 1.0)")
    ours, ref = sorted(results["nodegraph"]), sorted(results["diffusers"])
    emit_summary("sampler", [
        {"metric": f"sampler step (UNet ch {args.channels}, latent {args.size}, CFG)", "median": statistics.median(ours)
         * 1e3, "min": ours[0] * 1e3, "max": ours[-1] * 1e3, "unit": "ms", "reference": "plain diffusers loop "
         f"{statistics.median(ref) * 1e3:.1f} ms", "ratio": ratio, "target": "ratio <= 1.0"},
    ])


if __name__ == "__main__":
    main()
