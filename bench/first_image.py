"""First image: process start to PNG for README's first command, idle and beside two busy torch processes.

Run: .venv/bin/python bench/first_image.py [--repeat 5] [--seed-repeat 10] [--reference]

What is timed (wall clock, medians):

* ``nodegraph run workflows/txt2img.json -o DIR`` as a fresh process, from ``Popen`` to exit, checking that
  the PNG was written. Targets: <= 3 s idle, <= 6 s with the background load.
* A seed-only re-run in one process (GUI / server / API use): the workflow runs once, then the sampler seed
  changes and it runs again (sampler + decode + save re-run, the rest is cached). Target: <= 0.5 s.
* Each of those idle, then again beside two background processes that each run small matmuls (128x128,
  torch's default threads, OpenMP's default wait policy) in a loop: what two apps, a server plus a CLI run,
  or two Ray workers on one machine look like. The bench starts them, and stops them when done; they also
  exit on their own after ``--load-seconds``.
* ``--reference``: the same runs with torch's default threads and OpenMP's default wait policy
  (``--threads <cores>``, ``OMP_WAIT_POLICY`` empty), alternating with ours in the same run.
* ``--baseline DIR``: the same runs from another checkout of the repository (say the commit before a change:
  ``git archive REV | tar -x -C DIR``), alternating with this one in the same run, so a change is measured
  as a ratio even when other work loads the machine. CLI runs also report the child's CPU time.

The children get the caller's environment minus ``OMP_NUM_THREADS``/``OMP_WAIT_POLICY``: the CLI's own
choices are what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import emit_summary, machine  # noqa: E402

_LOADER = """
import sys, time, torch
end = time.time() + float(sys.argv[1])
a = torch.randn(128, 128)
while time.time() < end:
    for _ in range(50):
        a = torch.tanh(a @ a)
"""

_SEED_WORKER = """
import json, sys, tempfile, time
from pathlib import Path
from nodegraph.threads import prefer_passive_wait
prefer_passive_wait()  # what the CLI, GUI and server do at start
import nodegraph
root = Path(sys.argv[1])
graph = nodegraph.load_workflow(root / "workflows" / "txt2img.json")
settings = {"workflow_dir": str(root / "workflows")}
if sys.argv[3] != "auto":
    settings["threads"] = int(sys.argv[3])
with tempfile.TemporaryDirectory() as out:
    ex = nodegraph.Executor(output_dir=out, settings=settings)
    ex.run(graph).raise_for_status()
    times = []
    for i in range(int(sys.argv[2])):
        graph.set_value("sampler", "seed", 1000 + i)
        t0 = time.perf_counter()
        ex.run(graph).raise_for_status()
        times.append(time.perf_counter() - t0)
print("SEED_TIMES " + json.dumps(times))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


_CPU: dict[str, list[float]] = {}  # CPU seconds of each CLI run, by result name (--baseline)


def cli_run(extra_args: list[str], env: dict[str, str], timeout: float, root: Path = ROOT,
            cpu_key: str | None = None) -> float:
    """Seconds from process start to exit for README's first command in checkout ``root``; the PNG must exist.
    With ``cpu_key``, the child's CPU seconds (user + system) are appended to ``_CPU[cpu_key]``."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "nodegraph.cli", "run", "workflows/txt2img.json", "-o", out, "--quiet",
               *extra_args]
        t0, c0 = time.perf_counter(), os.times()
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  a run hit the {timeout:.0f} s timeout (counted as {timeout:.0f} s)", flush=True)
            return timeout
        elapsed, c1 = time.perf_counter() - t0, os.times()
        if proc.returncode != 0 or not list(Path(out).glob("*.png")):
            raise RuntimeError(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if cpu_key is not None:
        _CPU.setdefault(cpu_key, []).append(c1.children_user - c0.children_user + c1.children_system
                                            - c0.children_system)
    return elapsed


def seed_reruns(n: int, env: dict[str, str], timeout: float, threads: str = "auto", root: Path = ROOT) -> list[float]:
    try:
        proc = subprocess.run([sys.executable, "-c", _SEED_WORKER, str(root), str(n), threads], cwd=root,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # n re-runs did not finish in time: each took at least timeout / n
        print(f"  seed re-runs hit the {timeout:.0f} s timeout (counted as {timeout / n:.1f} s each)", flush=True)
        return [timeout / n] * n
    line = next((x for x in proc.stdout.splitlines() if x.startswith("SEED_TIMES ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"seed worker failed: {proc.stderr[-2000:]}")
    return json.loads(line.split(" ", 1)[1])


class BackgroundLoad:
    """Two busy torch processes for the duration of a ``with`` block (and never longer than ``seconds``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BackgroundLoad:
        for _ in range(2):
            self.procs.append(subprocess.Popen([sys.executable, "-c", _LOADER, str(self.seconds)], env=_env(),
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3.0)  # let them import torch and start multiplying
        if any(p.poll() is not None for p in self.procs):
            raise RuntimeError("a background load process exited early")
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def _line(name: str, xs: list[float], target: str = "") -> str:
    s = _stats(xs)
    return f"{name:52s} min {s['min']:.2f} s  median {s['median']:.2f} s  max {s['max']:.2f} s  {target}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="CLI runs per condition")
    ap.add_argument("--seed-repeat", type=int, default=10, help="seed-only re-runs per condition")
    ap.add_argument("--reference", action="store_true",
                    help="also time torch's default threads / wait policy beside the load")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="another checkout of the repo to time alternately with this one (ratio this/baseline)")
    ap.add_argument("--load-seconds", type=float, default=900, help="upper bound on the background load's life")
    ap.add_argument("--timeout", type=float, default=180, help="per CLI run")
    args = ap.parse_args()

    rows: list[dict] = []
    results: dict[str, list[float]] = {}
    env = _env()
    cli_run([], env, args.timeout)  # warm the page cache (files, wheels); not counted
    # Reference: torch's default threads (one per core) and OpenMP's default wait policy (an empty
    # OMP_WAIT_POLICY: libgomp warns and uses its default, and our entry points leave a set variable alone).
    ref_env, cores = _env(OMP_WAIT_POLICY=""), str(os.cpu_count() or 1)
    for cond in ("idle", "load"):
        with BackgroundLoad(args.load_seconds) if cond == "load" else nullcontext():
            for _ in range(args.repeat):  # ours and the reference alternate, so drifting load hits both
                results.setdefault(f"cli {cond}", []).append(
                    cli_run([], env, args.timeout, cpu_key=f"cli {cond}" if args.baseline else None))
                if args.reference:
                    results.setdefault(f"cli {cond}, torch default threads", []).append(
                        cli_run(["--threads", cores], ref_env, args.timeout))
                if args.baseline:
                    results.setdefault(f"cli {cond}, baseline", []).append(
                        cli_run([], env, args.timeout, root=args.baseline, cpu_key=f"cli {cond}, baseline"))
            print(f"{cond}: cli runs done", flush=True)
            # Seed re-runs in two halves per side, alternating, when there is a baseline.
            halves = 2 if args.baseline else 1
            for _ in range(halves):
                results.setdefault(f"seed {cond}", []).extend(
                    seed_reruns(max(1, args.seed_repeat // halves), env, args.timeout * 2))
                if args.baseline:
                    results.setdefault(f"seed {cond}, baseline", []).extend(
                        seed_reruns(max(1, args.seed_repeat // halves), env, args.timeout * 2, root=args.baseline))
            if args.reference:
                results[f"seed {cond}, torch default threads"] = seed_reruns(
                    args.seed_repeat, ref_env, args.timeout * 2, threads=cores)

    print(f"machine: {machine()}")
    targets = {"cli idle": "(target <= 3 s)", "cli load": "(target <= 6 s)", "seed idle": "(target <= 0.5 s)",
               "seed load": "(target <= 0.5 s)"}
    for name, xs in results.items():
        print(_line(name, xs, targets.get(name, "")))
        row = {"metric": f"txt2img first image, {name}", "unit": "s", **_stats(xs)}
        if name in targets:
            row["target"] = targets[name].strip("()").replace("target ", "")
        rows.append(row)
    for row, name in zip(rows, results, strict=True):
        ref = results.get(f"{name}, torch default threads")
        if ref:
            row["ratio"] = statistics.median(results[name]) / statistics.median(ref)
            row["reference"] = "torch default threads + OpenMP default wait policy, same run"
            print(f"ratio {name} / torch defaults in the same run: {row['ratio']:.2f}")
        base = results.get(f"{name}, baseline")
        if base:
            row["ratio"] = statistics.median(results[name]) / statistics.median(base)
            row["reference"] = f"baseline checkout {args.baseline}, same run"
            print(f"ratio {name} / baseline in the same run: {row['ratio']:.3f}")
    for name, xs in _CPU.items():
        print(f"CPU seconds, {name:40s} median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})")
    for cond in ("idle", "load"):
        if f"cli {cond}" in _CPU and f"cli {cond}, baseline" in _CPU:
            print(f"ratio CPU cli {cond} / baseline in the same run: "
                  f"{statistics.median(_CPU[f'cli {cond}']) / statistics.median(_CPU[f'cli {cond}, baseline']):.3f}")
    emit_summary("first_image", rows)


if __name__ == "__main__":
    main()
