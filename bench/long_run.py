"""Long-run stability: many consecutive runs of the demo workflow in one process.

Run: .venv/bin/python bench/long_run.py [--runs 1000] [--cache-mb 64]

Varies the seed every run (so the sampler, decode and save re-run and the
cache keeps filling), samples resident memory, and checks that RSS growth
after warm-up stays under 5% and that the cache never exceeds its budget.
Prints RSS at intervals; exits non-zero if a bound is broken.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench._util import emit_summary, machine  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--cache-mb", type=int, default=64)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import nodegraph

    graph = nodegraph.load_workflow(ROOT / "workflows" / "txt2img.json")
    budget = args.cache_mb * 2**20
    with tempfile.TemporaryDirectory() as out:
        ex = nodegraph.Executor(device="cpu", output_dir=out, cache_bytes=budget,
                                settings={"workflow_dir": str(ROOT / "workflows")})
        t0 = time.perf_counter()
        base = None
        peak_cache = 0
        samples = []
        for i in range(args.runs):
            graph.set_value("sampler", "seed", i)
            ex.run(graph).raise_for_status()
            peak_cache = max(peak_cache, ex.cache.nbytes)
            if i + 1 == args.warmup:
                base = rss_bytes()
            if (i + 1) % max(1, args.runs // 10) == 0:
                samples.append(rss_bytes())
                print(f"run {i + 1:5d}: RSS {samples[-1] / 2**20:.1f} MiB, cache {ex.cache.nbytes / 2**20:.1f} MiB "
                      f"({len(ex.cache)} entries), {time.perf_counter() - t0:.0f} s", flush=True)
            # files written per run are part of normal use; keep the folder from growing without bound here
            for p in Path(out).glob("*.png"):
                p.unlink()
    final = rss_bytes()
    growth = (final - base) / base if base else 0.0
    print(f"machine: {machine()}")
    print(f"RSS after warm-up {base / 2**20:.1f} MiB -> final {final / 2**20:.1f} MiB: growth {growth * 100:.2f}% "
          f"(bound 5%); peak cache {peak_cache / 2**20:.1f} MiB of {args.cache_mb} MiB budget")
    emit_summary("long_run", [{"metric": f"RSS growth over {args.runs} runs after warm-up", "median": growth * 100,
                               "unit": "%", "target": "< 5 %"},
                              {"metric": "peak cache bytes / budget", "median": peak_cache / budget, "unit": "x",
                               "target": "<= 1"}])
    return 0 if growth < 0.05 and peak_cache <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
