"""Cost of one step preview next to one sampler step, on the shipped demo model.

Run: .venv/bin/python bench/preview.py [--rounds 15] [--threads 1]

One guided denoiser evaluation (= one euler step: cond + uncond in one UNet call, CFG 5) of the demo
model at 64x64 (16x16 latents), against the two previews the sampler can attach to a step: the
latent->RGB projection (``pack/sampler.latent_preview``) and the demo's TAESD decoder
(``preview.taesd_preview``, 64x64 picture).  Rounds interleaved (order reversed every other round)
so load drift hits all alike; medians and ratios to the step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._util import emit_summary, machine  # noqa: E402
from nodes.diffusion.checkpoint import load_checkpoint  # noqa: E402
from nodes.diffusion.pack.common import sampling_inputs  # noqa: E402
from nodes.diffusion.pack.sampler import latent_preview  # noqa: E402
from nodes.diffusion.preview import find_preview_decoder, load_decoder, taesd_preview  # noqa: E402
from nodes.diffusion.sampling.guidance import cfg_denoiser  # noqa: E402
from nodes.shared.model_paths import DEMO_DIR  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = load_checkpoint(DEMO_DIR / "checkpoints" / "nodegraph-shapes-v1.safetensors")
    model = ck.model
    decoder = load_decoder(find_preview_decoder({}, model.rules.name))
    with torch.inference_mode():
        cond, uncond = sampling_inputs(model, ck.clip.encode("a red circle on a blue background"), ck.clip.encode(""),
                                       1, 64, 64, None, 4)
    step = cfg_denoiser(model.denoiser(), cond, uncond, 5.0)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([model.schedule.percent_to_sigma(0.5)])
    fns = {"step": lambda: step(x, sigma), "projection": lambda: latent_preview(x),
           "taesd": lambda: taesd_preview(decoder, x)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up
        for r in range(args.rounds):
            for name, fn in items if r % 2 == 0 else reversed(items):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(machine(), f"threads={args.threads}", f"rounds={args.rounds}")
    ref = statistics.median(times["step"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:12s} median {med * 1e3:8.2f} ms  min {min(ts) * 1e3:8.2f}  max {max(ts) * 1e3:8.2f}  "
              f"ratio vs step {med / ref:5.2f}")
        rows.append({"metric": name, "median": med, "min": min(ts), "max": max(ts), "unit": "s",
                     "reference": "step", "ratio": med / ref})
    emit_summary("preview", rows)


if __name__ == "__main__":
    main()
