"""Demo text-to-image time on one CPU core (issue: out of the box).

Run: .venv/bin/python bench/demo.py [--repeat 10] [--threads 1] [--workflow txt2img|flux_demo|sd3_txt2img]

Runs workflows/txt2img.json on the shipped demo checkpoint (or flux_demo.json on the
FLUX-layout demo files, sd3_txt2img.json on the SD3-layout demo's) through the real
engine, after a warm-up run, changing the seed (sampler + decode re-run) and
the prompt (text encode + sampler + decode re-run) each time.  Target: one
image at the default settings <= 0.5 s on one core after warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench._util import emit_summary, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workflow", default="txt2img", choices=("txt2img", "flux_demo", "sd3_txt2img"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import nodegraph

    graph = nodegraph.load_workflow(ROOT / "workflows" / f"{args.workflow}.json")
    with tempfile.TemporaryDirectory() as out:
        ex = nodegraph.Executor(device="cpu", output_dir=out,  # nodes apply settings["threads"] themselves
                                settings={"workflow_dir": str(ROOT / "workflows"), "threads": args.threads})
        t0 = time.perf_counter()
        first = ex.run(graph)
        first.raise_for_status()
        cold = time.perf_counter() - t0
        seeds, prompts = [], []
        colours = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black"]
        for i in range(args.repeat):
            graph.set_value("sampler", "seed", 1000 + i)
            t0 = time.perf_counter()
            ex.run(graph).raise_for_status()
            seeds.append(time.perf_counter() - t0)
            graph.set_value("positive", "text", f"a {colours[i % 8]} star on a {colours[(i + 3) % 8]} background")
            t0 = time.perf_counter()
            r = ex.run(graph)
            r.raise_for_status()
            prompts.append(time.perf_counter() - t0)
        steps = graph.nodes["sampler"].values.get("steps")
    print(f"machine: {machine()}, torch threads {args.threads}")
    print(f"first run (load + everything): {cold:.3f} s")
    for name, xs in (("new seed", seeds), ("new prompt", prompts)):
        s = sorted(xs)
        print(f"{name:10s}: min {s[0]:.3f} s  median {statistics.median(s):.3f} s  max {s[-1]:.3f} s "
              f"({steps} steps, target <= 0.5 s)")
    name = "demo" if args.workflow == "txt2img" else f"demo_{args.workflow}"
    emit_summary(name, [
        {"metric": f"demo {args.workflow}, new seed ({steps} steps, 1 thread)", "median": statistics.median(seeds),
         "min": min(seeds), "max": max(seeds), "unit": "s", "target": "<= 0.5 s"},
        {"metric": f"demo {args.workflow}, new prompt", "median": statistics.median(prompts), "min": min(prompts),
         "max": max(prompts), "unit": "s", "target": "<= 0.5 s"},
        {"metric": f"demo {args.workflow}, first run incl. load", "median": cold, "unit": "s"},
    ])


if __name__ == "__main__":
    main()
