"""Batch-sweep throughput: a 100-image seed sweep, local (one executor) vs Ray with 2 workers.

Run: .venv/bin/python bench/batch.py [--items 100] [--repeat 3] [--no-ray]

Model: the shipped demo checkpoint (``workflows/txt2img.json``) when
``nodes/diffusion/demo_models/`` holds it, else the tiny random-weight SD1-layout
fixture checkpoint from ``tests/diffusion/pipeline_fixtures.py`` (48x32, 2 steps)
-- the first line of output says which.  Reported per mode (median of repeats):

* images/s over the whole batch (wall clock of ``run_batch`` / ``run_batch_ray``);
* share of time outside node work, from the manifests: ``1 - sum(node_seconds) /
  (wall * workers)`` -- planning, cache lookups, manifest writes, and for Ray the
  actor start-up (each worker imports torch and loads the model), scheduling and
  shipping files back;
* per-item overhead: median of ``seconds - node_seconds`` over items (what the
  engine adds around the nodes of one item).

Local uses torch's default threads (2 on this machine); Ray uses 2 single-thread
workers, so both use the same 2 cores.  Ray's runtime start (``ray.init``) is
timed separately and excluded: a cluster is started once, not per batch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from bench._util import emit_summary, machine  # noqa: E402


def _setup(work: Path) -> tuple[object, dict, str]:
    """(graph, settings, description) for the demo model if shipped, else a tiny fixture."""
    from nodegraph import load_workflow

    demo_dir = ROOT / "nodes" / "diffusion" / "demo_models"
    if demo_dir.is_dir() and any(demo_dir.glob("*.safetensors")):
        graph = load_workflow(ROOT / "workflows" / "txt2img.json")
        return graph, {}, f"demo model ({next(demo_dir.glob('*.safetensors')).name}, workflows/txt2img.json)"
    from tests.headless.diffusion_helpers import save_graph, settings, write_models

    models = work / "models"
    (name,) = write_models(models)
    return save_graph(name), settings(models), "tiny fixture checkpoint (sd1 layout, 48x32, 2 steps; no demo model)"


def _overheads(manifest: dict, wall: float, workers: int) -> tuple[float, float]:
    items = [e for e in manifest["items"] if e["seconds"] is not None]
    node = sum(e["node_seconds"] for e in items)
    per_item = statistics.median(e["seconds"] - e["node_seconds"] for e in items)
    return 1.0 - node / (wall * workers), per_item


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    from nodegraph import Executor
    from nodegraph.batch import run_batch

    work = Path(tempfile.mkdtemp(prefix="nodegraph-bench-batch-"))
    rows = []
    try:
        graph, settings, what = _setup(work)
        print(f"machine: {machine()}")
        print(f"model: {what}; sweep sampler.seed=1..{args.items}; {args.repeat} repeat(s)")
        sweep = [f"sampler.seed=1..{args.items}"]

        local_walls, local_out, local_per = [], [], []
        for r in range(args.repeat):
            out = work / f"local{r}"
            executor = Executor(None, device="cpu", output_dir=out, settings=settings)  # fresh cache each time
            t0 = time.perf_counter()
            res = run_batch(graph, sweep, executor=executor, output_dir=out, progress=False)
            wall = time.perf_counter() - t0
            assert res.ok, res.failed[:3]
            share, per = _overheads(res.manifest, wall, 1)
            local_walls.append(wall)
            local_out.append(share)
            local_per.append(per)
            print(f"  local  #{r}: {wall:.2f}s  {args.items / wall:.2f} img/s  outside nodes {share:.1%}  "
                  f"per-item overhead {per * 1e3:.2f} ms")
        local_med = statistics.median(local_walls)
        rows.append({"metric": "local images/s", "median": round(args.items / local_med, 3),
                     "min": round(args.items / max(local_walls), 3), "max": round(args.items / min(local_walls), 3),
                     "unit": "img/s"})
        rows.append({"metric": "local share outside node work", "median": round(statistics.median(local_out), 4),
                     "unit": "fraction"})
        rows.append({"metric": "local per-item overhead", "median": round(statistics.median(local_per) * 1e3, 3),
                     "unit": "ms"})

        if not args.no_ray:
            try:
                import ray
            except ImportError:
                print("ray: not installed (pip install 'nodegraph[ray]'); skipped")
            else:
                from nodegraph.distributed import run_batch_ray

                t0 = time.perf_counter()
                ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
                print(f"  ray.init (excluded): {time.perf_counter() - t0:.2f}s")
                ray_walls, ray_out, ray_per = [], [], []
                try:
                    for r in range(args.repeat):
                        out = work / f"ray{r}"
                        t0 = time.perf_counter()
                        res = run_batch_ray(graph, sweep, workers=args.workers, settings=settings, output_dir=out,
                                            progress=False, threads_per_worker=1)
                        wall = time.perf_counter() - t0
                        assert res.ok, res.failed[:3]
                        share, per = _overheads(res.manifest, wall, args.workers)
                        ray_walls.append(wall)
                        ray_out.append(share)
                        ray_per.append(per)
                        print(f"  ray{args.workers} #{r}: {wall:.2f}s  {args.items / wall:.2f} img/s  "
                              f"outside nodes {share:.1%}  per-item overhead {per * 1e3:.2f} ms")
                finally:
                    ray.shutdown()
                ray_med = statistics.median(ray_walls)
                rows.append({"metric": f"ray {args.workers} workers images/s",
                             "median": round(args.items / ray_med, 3),
                             "min": round(args.items / max(ray_walls), 3),
                             "max": round(args.items / min(ray_walls), 3), "unit": "img/s",
                             "reference": "local", "ratio": round(local_med / ray_med, 3)})
                rows.append({"metric": f"ray {args.workers} workers share outside node work",
                             "median": round(statistics.median(ray_out), 4), "unit": "fraction"})
                rows.append({"metric": f"ray {args.workers} workers per-item overhead",
                             "median": round(statistics.median(ray_per) * 1e3, 3), "unit": "ms"})
        print()
        for row in rows:
            ratio = f"  (x{row['ratio']} vs {row['reference']})" if "ratio" in row else ""
            print(f"{row['metric']:<40} median {row['median']} {row['unit']}{ratio}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit_summary("batch", rows)


if __name__ == "__main__":
    main()
