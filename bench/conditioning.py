"""Per-step cost of conditioning lists: one prompt vs three entries, batched vs one call per entry.

Run: .venv/bin/python bench/conditioning.py [--rounds 7] [--latent 32x48] [--threads 1]

The tiny SD1 checkpoint of the test fixtures (written to a temporary folder), CFG 5, one guided
denoiser evaluation (= one sampler step) at a mid-schedule sigma.  Variants, timed in the same
run with rounds interleaved (order reversed every other round) so load drift hits all alike:

* ``one``       -- a single prompt (the fast path: cond + uncond in one call of batch 2);
* ``3_batched`` -- a whole-image prompt + two half-image masked prompts (ComfyUI regional
  prompting with masks): 3 cond + 1 uncond entries of the same shape, one call of batch 4;
* ``3_single``  -- the same three entries, one model call per entry (4 calls of batch 1);
* ``3_areas_batched`` / ``3_areas_single`` -- whole-image prompt + left and right half *areas*
  (Set Area): the halves are crops, so the model runs on half-size inputs; batched, the whole
  prompt + negative share one call and the two halves + their same-area negatives another;
* ``2_areas_batched`` -- only the two half areas (what ``workflows/regional.json`` does): the
  halves and their same-area negatives in one call, plus the whole-image negative.

Reports medians and the ratios to ``one``.  On a CPU the compute grows with the batch, so
batching saves the per-call overhead (and lets the kernels work on larger tensors), not the
per-entry compute: expect a cost between 1x and N x one prompt, and below the unbatched figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._util import emit_summary, machine  # noqa: E402
from nodes.diffusion.checkpoint import load_checkpoint  # noqa: E402
from nodes.diffusion.pack.common import sampling_inputs  # noqa: E402
from nodes.diffusion.runtime import Area, ConditioningList  # noqa: E402
from nodes.diffusion.sampling.composite import Region, composite_denoiser  # noqa: E402
from nodes.diffusion.sampling.guidance import cfg_denoiser  # noqa: E402
from tests.diffusion.pipeline_fixtures import write_tiny_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--latent", default="32x48", help="latent HxW (the tiny VAE downscales 4x)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.latent.split("x"))
    f = 4
    with tempfile.TemporaryDirectory() as tmp:
        ck = load_checkpoint(write_tiny_checkpoint(Path(tmp), "sd1").path)
    model = ck.model
    with torch.inference_mode():
        whole, left, right, neg = (ck.clip.encode(t) for t in ("a garden", "a red circle", "a blue square", ""))
    masks = torch.zeros(2, h * f, w * f)
    masks[0, :, : w * f // 2] = 1
    masks[1, :, w * f // 2:] = 1
    from dataclasses import replace

    three = ConditioningList((whole, replace(left, mask=masks[:1]), replace(right, mask=masks[1:])))
    half = Area(h * f, w * f // 2, 0, 0)
    areas = ConditioningList((whole, replace(left, area=half), replace(right, area=replace(half, x=w * f // 2))))
    cond1, uncond1 = sampling_inputs(model, whole, neg, 1, h * f, w * f, None, f)
    cond3, uncond3 = sampling_inputs(model, three, neg, 1, h * f, w * f, None, f)
    conda, uncanda = sampling_inputs(model, areas, neg, 1, h * f, w * f, None, f)
    halves = ConditioningList(areas.entries[1:])
    condh, uncandh = sampling_inputs(model, halves, neg, 1, h * f, w * f, None, f)
    den = model.denoiser()
    fns = {
        "one": cfg_denoiser(den, cond1, uncond1, 5.0),
        "3_batched": composite_denoiser(den, cond3, [Region(uncond3)], 5.0),
        "3_single": composite_denoiser(den, cond3, [Region(uncond3)], 5.0, max_batch=1),
        "3_areas_batched": composite_denoiser(den, conda, [Region(uncanda)], 5.0),
        "3_areas_single": composite_denoiser(den, conda, [Region(uncanda)], 5.0, max_batch=1),
        "2_areas_batched": composite_denoiser(den, condh, [Region(uncandh)], 5.0),
    }
    x = torch.randn(1, model.latent_channels, h, w, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([model.schedule.percent_to_sigma(0.5)])
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    with torch.inference_mode():
        for fn in fns.values():
            fn(x, sigma)  # warm-up
        for r in range(args.rounds):
            for name, fn in items if r % 2 == 0 else reversed(items):
                t0 = time.perf_counter()
                fn(x, sigma)
                times[name].append(time.perf_counter() - t0)
    print(machine(), f"threads={args.threads}", f"latent {h}x{w}", f"rounds={args.rounds}")
    ref = statistics.median(times["one"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:16s} median {med * 1e3:8.2f} ms/step  min {min(ts) * 1e3:8.2f}  max {max(ts) * 1e3:8.2f}  "
              f"ratio vs one {med / ref:5.2f}")
        rows.append({"metric": f"step_{name}", "median": med, "min": min(ts), "max": max(ts), "unit": "s",
                     "reference": "one", "ratio": med / ref})
    emit_summary("conditioning", rows)


if __name__ == "__main__":
    main()
