"""Run every benchmark and print one table of medians and ratios.

Run: .venv/bin/python bench/run_all.py [--only engine,sampler] [--skip long_run]

Each bench script runs in its own process (so imports and caches do not leak
between them) and ends with a ``BENCH_JSON`` line; this collects those lines.
Numbers from a shared 2-core machine are noisy: each row shows min/median/max.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import machine  # noqa: E402

BENCHES = {
    "engine": ["bench/engine.py"],
    "subgraph_plan": ["bench/subgraph_plan.py"],
    "sampler": ["bench/sampler.py", "--repeat", "3"],
    "flux_step": ["bench/flux_step.py"],
    "sd3_step": ["bench/sd3_step.py"],
    "conditioning": ["bench/conditioning.py"],
    "preview": ["bench/preview.py"],
    "demo": ["bench/demo.py"],
    "first_image": ["bench/first_image.py", "--reference"],
    "checkpoint_load": ["bench/checkpoint_load.py", "--repeat", "2"],
    "gui": ["bench/gui_open.py"],
    "gui_edit": ["bench/gui_edit.py"],  # one script per entry: the rest of a list is its command line
    "gui_arrange": ["bench/gui_arrange.py"],
    "flux_load": ["bench/split_load.py", "--repeat", "2"],
    "sd3_load": ["bench/split_load.py", "--family", "sd3", "--repeat", "2"],
    "zimage_load": ["bench/split_load.py", "--family", "zimage", "--repeat", "2"],
    "batch": ["bench/batch.py"],
    "server_overrides": ["bench/server_overrides.py"],
    "long_run": ["bench/long_run.py", "--runs", "600", "--cache-mb", "16"],  # cache full by run ~280
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated bench names")
    ap.add_argument("--skip", default="", help="comma-separated bench names to skip")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    names = [n for n in names if n not in args.skip.split(",")]
    rows = []
    print(f"machine: {machine()}  date: {time.strftime('%Y-%m-%d %H:%M')}")
    for name in names:
        script = BENCHES[name]
        if not (ROOT / script[0]).exists():
            print(f"[{name}] skipped: {script[0]} not present")
            continue
        print(f"\n=== {name} ===", flush=True)
        proc = subprocess.run([sys.executable, *script], cwd=ROOT, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                rows += [dict(r, bench=name) for r in json.loads(line[11:])["rows"]]
            else:
                print(line)
        if proc.returncode:
            print(f"[{name}] FAILED (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    print("\n| bench | metric | min | median | max | unit | ratio | reference | target |")
    print("|---|---|---|---|---|---|---|---|---|")

    def f(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    for r in rows:
        print(f"| {r['bench']} | {r['metric']} | {f(r.get('min'))} | {f(r.get('median'))} | {f(r.get('max'))} | "
              f"{r.get('unit', '')} | {f(r.get('ratio'))} | {r.get('reference', '')} | {r.get('target', '')} |")


if __name__ == "__main__":
    main()
