"""Sampler step time: our KSampler path vs a plain diffusers UNet loop on the same weights.

Run: .venv/bin/python bench/sampler.py [--channels 64] [--size 32] [--steps 8] [--repeat 5]

Both sides: the same SD1-layout UNet weights (ours loaded directly, diffusers'
converted with its own LDM converter), batch 1 with classifier-free guidance
(cond + uncond in one batch of 2), Euler over the same sigmas, fp32 on CPU,
inference mode.  Before timing, both loops are run once from the same noise
and checked to call their UNet ``--steps`` times and to reach the same latent,
so the per-step figures divide equal work by equal step counts.

Prints per-step median/min/max of wall time (the main figure, ratio
ours/diffusers, target <= 1.0), the same ratio in thread CPU time (less
sensitive to other processes on a shared machine), and a breakdown: the UNet
forward alone on identical inputs for both models, and what each loop adds
around it (thread CPU outside the UNet calls, timed by hooks within each run).
All four are timed in one schedule whose order reverses every round
(ABCD DCBA ...), so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._util import emit_summary, machine  # noqa: E402
from nodes.diffusion.models.unet import UNetModel  # noqa: E402
from nodes.diffusion.sampling.ksampler import sample  # noqa: E402
from nodes.diffusion.sampling.model_sampling import make_denoiser, make_schedule  # noqa: E402
from nodes.diffusion.sampling.noise import initial_noise  # noqa: E402
from nodes.diffusion.sampling.schedulers import sigmas_for  # noqa: E402
from tests.diffusion.ldm_fixtures import diffusers_unet, randomize_, tiny_unet_config  # noqa: E402

Timings = dict[str, dict[str, list[float]]]


class InsideTimer:
    """Thread-CPU seconds spent inside a module's calls (forward pre/post hooks), to tell a loop's own cost
    from its model's within the same run."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self.handles = [h for m in modules for h in (m.register_forward_pre_hook(self._enter),
                                                    m.register_forward_hook(self._leave))]

    def _enter(self, _m: torch.nn.Module, _a: tuple) -> None:
        self._start = time.thread_time()

    def _leave(self, _m: torch.nn.Module, _a: tuple, _o: object) -> None:
        self.seconds += time.thread_time() - self._start


def time_alternating(fns: dict[str, Callable[[], object]], rounds: int, per: int,
                     inside: InsideTimer | None = None) -> Timings:
    """Wall and thread-CPU seconds per ``per`` units of each fn; ``rounds`` rounds, order reversed every other one.
    With ``inside``, also the thread-CPU seconds per unit spent inside the timed modules (``"inside"``)."""
    out: Timings = {name: {"wall": [], "cpu": [], "inside": []} for name in fns}
    items = list(fns.items())
    for r in range(rounds):
        for name, fn in items if r % 2 == 0 else reversed(items):
            if inside is not None:
                inside.seconds = 0.0
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            out[name]["cpu"].append((time.thread_time() - c0) / per)
            out[name]["wall"].append((time.perf_counter() - w0) / per)
            if inside is not None:
                out[name]["inside"].append(inside.seconds / per)
    return out


def fmt(xs: list[float]) -> str:
    s = sorted(xs)
    return f"min {s[0] * 1e3:.1f} ms  median {statistics.median(s) * 1e3:.1f} ms  max {s[-1] * 1e3:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=32, help="latent size")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per side = 2 * repeat")
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

    def ours_run() -> torch.Tensor:
        den = make_denoiser(lambda x, t, context: ours(x, t, context), schedule, "eps")
        with torch.inference_mode():
            return sample(
                den,
                schedule,
                latent,
                sampler="euler",
                scheduler="normal",
                steps=args.steps,
                seed=0,
                cfg=5.0,
                cond_kwargs={"context": ctx},
                uncond_kwargs={"context": unc},
            )

    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    # The full list, final 0 included: given ``sigmas=``, diffusers takes them as the whole
    # schedule (one step per sigma but the last) and appends nothing.  Passing ``sigmas[:-1]``
    # (as this bench once did) runs steps - 1 UNet calls, and dividing by ``steps`` then
    # understated the reference's per-step time by 1/steps.
    sigmas = sigmas_for("normal", args.steps, schedule).tolist()

    def diffusers_run(noise: torch.Tensor | None = None) -> torch.Tensor:
        sched.set_timesteps(sigmas=sigmas)
        if noise is None:
            noise = torch.randn(1, 4, args.size, args.size, generator=torch.Generator().manual_seed(0))
        x = noise * sched.init_noise_sigma
        both = torch.cat([ctx, unc])
        with torch.inference_mode():
            for t in sched.timesteps:
                inp = sched.scale_model_input(torch.cat([x, x]), t)
                eps = ref(inp, t, encoder_hidden_states=both).sample
                c, u = eps.chunk(2)
                x = sched.step(u + 5.0 * (c - u), t, x).prev_sample
        return x

    # Same work on both sides: count UNet calls, compare the results from the same noise,
    # and keep our loop's UNet inputs for the forward-only comparison.
    calls = {"nodegraph": 0, "diffusers": 0}
    unet_inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_ours(_m: torch.nn.Module, a: tuple) -> None:
        calls["nodegraph"] += 1
        unet_inputs.append((a[0].clone(), a[1].clone(), a[2].clone()))

    def on_ref(_m: torch.nn.Module, _a: tuple) -> None:
        calls["diffusers"] += 1

    hooks = [ours.register_forward_pre_hook(on_ours), ref.register_forward_pre_hook(on_ref)]
    out_ours = ours_run()
    out_ref = diffusers_run(initial_noise(latent.shape, 0))
    for h in hooks:
        h.remove()
    if calls != {"nodegraph": args.steps, "diffusers": args.steps}:
        raise SystemExit(f"UNet calls per run differ from --steps {args.steps}: {calls}")
    diff = float((out_ours - out_ref).abs().max() / out_ref.abs().max())
    if diff > 1e-3:
        raise SystemExit(f"the two loops disagree (max rel. difference {diff:.2e}): they are not doing the same work")

    def ours_fwd() -> None:
        with torch.inference_mode():
            for x, t, c in unet_inputs:
                ours(x, t, c)

    def ref_fwd() -> None:
        with torch.inference_mode():
            for x, t, c in unet_inputs:
                ref(x, t, encoder_hidden_states=c)

    for fn in (ours_run, diffusers_run, ours_fwd, ref_fwd):
        fn()  # warm-up
    # One alternating schedule for all four. What each loop adds around its UNet is measured inside each run
    # (hooks time every UNet call); the difference of two medians (loop minus forward-alone) moves by several
    # ms from run to run, more than the loops' own cost.
    inside = InsideTimer(ours, ref)
    timed = time_alternating(
        {"nodegraph": ours_run, "diffusers": diffusers_run, "nodegraph fwd": ours_fwd, "diffusers fwd": ref_fwd},
        2 * args.repeat,
        args.steps,
        inside,
    )
    for h in inside.handles:
        h.remove()
    loop = {name: timed[name] for name in ("nodegraph", "diffusers")}
    fwd = {name: timed[name + " fwd"] for name in ("nodegraph", "diffusers")}

    def ratio(t: Timings, kind: str = "wall") -> float:
        return statistics.median(t["nodegraph"][kind]) / statistics.median(t["diffusers"][kind])

    print(f"machine: {machine()}, torch threads {args.threads}")
    print(
        f"UNet model_channels={args.channels}, latent {args.size}x{args.size}, {args.steps} steps, CFG batch 2; "
        f"{args.steps} UNet calls per run on both sides, results agree to {diff:.1e} (rel.)"
    )
    print(f"sampler step, {2 * args.repeat} runs per side:")
    for name, t in loop.items():
        print(f"  {name:10s} {fmt(t['wall'])}   (thread CPU median {statistics.median(t['cpu']) * 1e3:.1f} ms)")
    print(
        f"  ratio nodegraph/diffusers (median): {ratio(loop):.3f}  (target <= 1.0); "
        f"in thread CPU time {ratio(loop, 'cpu'):.3f}"
    )
    print(f"UNet forward alone, identical inputs (our loop's), {2 * args.repeat} runs per side:")
    for name, t in fwd.items():
        print(f"  {name:10s} {fmt(t['wall'])}   (thread CPU median {statistics.median(t['cpu']) * 1e3:.1f} ms)")
    print(f"  ratio nodegraph/diffusers (median): {ratio(fwd):.3f}; in thread CPU time {ratio(fwd, 'cpu'):.3f}")
    for name in loop:
        outside = [c - i for c, i in zip(loop[name]["cpu"], loop[name]["inside"], strict=True)]
        print(f"  {name:10s} loop's own cost around its UNet calls (thread CPU, measured per run with hooks): "
              f"median {statistics.median(outside) * 1e3:.2f} ms/step (min {min(outside) * 1e3:.2f}, "
              f"max {max(outside) * 1e3:.2f})")
    ours_s, ref_s = sorted(loop["nodegraph"]["wall"]), sorted(loop["diffusers"]["wall"])
    ours_f, ref_f = sorted(fwd["nodegraph"]["wall"]), sorted(fwd["diffusers"]["wall"])
    emit_summary(
        "sampler",
        [
            {
                "metric": f"sampler step (UNet ch {args.channels}, latent {args.size}, CFG)",
                "median": statistics.median(ours_s) * 1e3,
                "min": ours_s[0] * 1e3,
                "max": ours_s[-1] * 1e3,
                "unit": "ms",
                "reference": f"plain diffusers loop {statistics.median(ref_s) * 1e3:.1f} ms",
                "ratio": ratio(loop),
                "target": "ratio <= 1.0",
            },
            {
                "metric": "UNet forward alone (same inputs)",
                "median": statistics.median(ours_f) * 1e3,
                "min": ours_f[0] * 1e3,
                "max": ours_f[-1] * 1e3,
                "unit": "ms",
                "reference": f"diffusers UNet {statistics.median(ref_f) * 1e3:.1f} ms",
                "ratio": ratio(fwd),
            },
        ],
    )


if __name__ == "__main__":
    main()
