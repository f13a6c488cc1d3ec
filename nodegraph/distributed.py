"""Distributed batch sweeps on a Ray cluster (optional: ``pip install 'nodegraph[ray]'``).

The driver (this process) does what needs no model: it parses and validates
every item up front (exactly like a local batch), owns the manifest and the
output folder, and writes every file.  Each Ray worker is an actor holding ONE
:class:`~nodegraph.executor.Executor`, so its cache keeps the checkpoint it
loaded for the next item.  Items are partitioned so that items selecting the
same model files (same checkpoint name, VAE, LoRA...) land on the same worker
where the load balance allows it: a model is loaded once per worker that
needs it, not once per item.

Workers write into a private scratch folder and send the files' bytes back, so
no shared file system is needed; the driver places them under the same
relative names a local run would use.  Outputs and manifest are therefore
identical to a local run with the same seeds, except for the timing fields
(``seconds``, ``node_seconds``).  Ray is imported only when a distributed batch
starts; nothing else in nodegraph depends on it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .batch import (
    BatchItem,
    BatchOptions,
    BatchPlan,
    BatchResult,
    ItemOutcome,
    Sweep,
    open_manifest,
    prepare,
    progress_bar,
    run_item,
)
from .context import CancelToken
from .errors import NodegraphError
from .fileio import atomic_write_bytes
from .graph import Graph
from .registry import Registry
from .workflow import from_dict, to_dict

RegistryFactory = Callable[[], Registry]


class RayUnavailable(NodegraphError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"distributed batches need Ray ({exc}); install it with: "
                             "pip install 'nodegraph[ray]'") from None
    return ray


# -- scheduling (pure, testable without Ray) ------------------------------------------------------


def affinity_key(plan: BatchPlan, registry: Registry, item: BatchItem) -> tuple[tuple[str, str], ...]:
    """What an item loads that other items might share: its values for inputs of nodes
    that inspect files (nodes with a fingerprint -- checkpoint, VAE, LoRA, ControlNet and
    image loaders).  Items with equal keys reuse one worker's cached loads."""
    key = []
    for k, v in item.overrides.items():
        node = plan.graph.nodes.get(k.rpartition(".")[0])
        spec = registry.get(node.type) if node is not None else None
        if spec is not None and spec.fingerprint is not None:
            key.append((k, str(v)))
    return tuple(sorted(key))


def partition(keys: Sequence[Hashable], workers: int) -> list[list[int]]:
    """Assign item positions ``0..len(keys)-1`` to ``workers`` lists.

    Items with the same key form a group.  Groups are cut into chunks of at most
    ``ceil(n / workers)`` items (so one big group -- e.g. every item uses the same
    checkpoint -- still spreads over all workers), and chunks go largest first to the
    least-loaded worker, preferring a worker that already holds that group.  Each
    worker's list keeps the items' original order, which makes a run deterministic."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    n = len(keys)
    out: list[list[int]] = [[] for _ in range(workers)]
    if n == 0:
        return out
    cap = -(-n // workers)
    groups: dict[Hashable, list[int]] = {}
    for pos, k in enumerate(keys):
        groups.setdefault(k, []).append(pos)
    chunks: list[tuple[Hashable, list[int]]] = []
    for k, members in groups.items():
        for start in range(0, len(members), cap):
            chunks.append((k, members[start:start + cap]))
    chunks.sort(key=lambda c: (-len(c[1]), c[1][0]))
    holds: list[set[Hashable]] = [set() for _ in range(workers)]
    for k, members in chunks:
        # A worker that already has this model wins if taking the chunk keeps it within the cap.
        warm = [w for w in range(workers) if k in holds[w] and len(out[w]) + len(members) <= cap]
        target = warm[0] if warm else min(range(workers), key=lambda w: (len(out[w]), w))
        out[target].extend(members)
        holds[target].add(k)
    return [sorted(w) for w in out]


# -- the worker ------------------------------------------------------------------------------------


class BatchWorker:
    """Body of the Ray actor: one executor (and its cache) for every item it is given."""

    def __init__(self, workflow: Mapping[str, Any], mode: str, workflow_hash: str,
                 settings: Mapping[str, Any] | None, device: str,
                 registry_factory: RegistryFactory | None = None, threads: int | None = None) -> None:
        from .executor import Executor

        if threads:
            with contextlib.suppress(ImportError):
                import torch

                torch.set_num_threads(threads)
        registry = registry_factory() if registry_factory is not None else Registry.with_installed_packs()
        self.scratch = Path(tempfile.mkdtemp(prefix="nodegraph-worker-"))
        self.executor = Executor(registry, device=device, output_dir=self.scratch, settings=settings)
        self.plan = BatchPlan(from_dict(dict(workflow)), [], mode, [], workflow_hash)
        self.pid = os.getpid()

    def run(self, item: BatchItem, targets: Sequence[str] | None = None) -> tuple[ItemOutcome, dict[str, bytes]]:
        outcome = run_item(self.executor, self.plan, item, self.scratch, targets=targets)
        files: dict[str, bytes] = {}
        for rel in outcome.outputs:
            path = self.scratch / rel
            files[rel] = path.read_bytes()
            path.unlink()
        return outcome, files

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "scratch": str(self.scratch)}

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


_COUNTER = re.compile(r"^(?P<stem>.*)_(?P<n>\d{5,})(?P<suffix>\.[^./]*)$")


def place_file(out_dir: Path, rel: str, data: bytes) -> str:
    """Write a worker's file under ``out_dir`` at ``rel`` (taking the next free counter when
    that name is taken, as the save nodes would); returns the final relative name."""
    root = out_dir.resolve()
    target = (root / rel).resolve()
    if root not in target.parents:
        raise NodegraphError(f"a worker returned a file outside the output folder: {rel!r}")
    m = _COUNTER.match(target.name)
    if target.exists() and m is not None:
        n = int(m.group("n"))
        while target.exists():
            n += 1
            target = target.with_name(f"{m.group('stem')}_{n:05d}{m.group('suffix')}")
    atomic_write_bytes(target, data)
    return target.relative_to(root).as_posix()


# -- the driver ------------------------------------------------------------------------------------


def _init_ray(ray: Any, c: RayOptions) -> bool:
    """Start (``address`` None) or join Ray unless this process already did; True if started here."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if c.address is None:
        kwargs["num_cpus"] = c.workers or 2
    else:
        kwargs["address"] = c.address
    kwargs.update(c.init_kwargs or {})
    try:
        ray.init(**kwargs)
    except Exception as exc:
        where = f" at {c.address!r}" if c.address else ""
        raise RayUnavailable(f"cannot start or reach Ray{where}: {exc}") from exc
    return True


def _receive(ray: Any, ref: Any, out_dir: Path) -> ItemOutcome:
    """A finished item's outcome, its files placed under ``out_dir``; a dead worker is an error outcome."""
    try:
        outcome, files = ray.get(ref)
        outcome.outputs = [place_file(out_dir, rel, files[rel]) for rel in outcome.outputs]
        if outcome.report is not None:  # point the report at the placed files, not the scratch
            outcome.report["outputs"] = [str((out_dir / rel).resolve()) for rel in outcome.outputs]
    except NodegraphError:
        raise
    except Exception as exc:  # the worker died (e.g. killed, out of memory)
        outcome = ItemOutcome("error", [], 0.0, 0.0, {"node_id": None, "node_type": None, "input": None,
                                                      "message": f"worker failed: {exc}"})
    return outcome


@dataclass(frozen=True)
class RayOptions:
    """Where and how a distributed batch runs (what to run is :class:`~nodegraph.batch.BatchOptions`).

    ``address`` None starts a local Ray runtime with ``workers`` CPUs (default 2) and shuts
    it down afterwards; otherwise connects to that cluster (``"auto"`` = the one this machine
    belongs to) and uses ``workers`` actors (default: its CPU count).  ``registry_factory``
    builds each worker's registry (default: the installed packs); it must be importable by the
    workers.  ``threads_per_worker`` sets torch's intra-op threads in each worker;
    ``init_kwargs`` go to ``ray.init``.
    """

    address: str | None = None
    workers: int | None = None
    registry_factory: RegistryFactory | None = None
    threads_per_worker: int | None = 1
    init_kwargs: Mapping[str, Any] | None = None


_RAY_FIELDS = frozenset(f.name for f in fields(RayOptions))


def run_batch_ray(
    graph: Graph,
    sweeps: Mapping[str, Any] | Iterable[str | Sweep],
    options: BatchOptions | None = None,
    cluster: RayOptions | None = None,
    *,
    plan: BatchPlan | None = None,
    **changes: Any,
) -> BatchResult:
    """Like :func:`nodegraph.batch.run_batch`, on Ray (``cluster`` says where).

    Keyword arguments override single fields of ``options`` or ``cluster`` by name.
    Validation (``SweepError``/``BatchInvalid``/``ManifestMismatch``) happens before Ray starts.
    """
    ray = import_ray()  # before anything is written: a missing extra is bad input (exit 2)
    ray_changes = {k: v for k, v in changes.items() if k in _RAY_FIELDS}
    c = replace(cluster or RayOptions(), **ray_changes)
    o = (options or BatchOptions()).with_changes({k: v for k, v in changes.items() if k not in _RAY_FIELDS})
    registry = o.registry if o.registry is not None else (
        c.registry_factory() if c.registry_factory is not None else Registry.with_installed_packs())
    out_dir = Path(o.output_dir)
    if plan is None:
        plan = prepare(graph, sweeps, registry, o)
    manifest, skipped = open_manifest(plan, out_dir, fresh=o.fresh)
    workers, targets, settings, on_item = c.workers, o.targets, o.settings, o.on_item
    todo = [pos for pos in range(len(plan.items)) if pos not in set(skipped)]
    bar = progress_bar(o.progress, len(plan.items))
    for _ in skipped:
        bar.finish_item("ok", skipped=True)
    cancel = o.cancel or CancelToken()
    t0 = time.perf_counter()
    outcomes: dict[int, ItemOutcome] = {}
    if not todo:
        bar.close()
        return BatchResult(manifest.path, manifest.to_dict(), outcomes, skipped, 0.0)

    started_here = _init_ray(ray, c)
    actors: list[Any] = []
    cancelled = False
    try:
        n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        n_workers = max(1, min(n_workers, len(todo)))
        keys = [affinity_key(plan, registry, plan.items[pos]) for pos in todo]
        parts = partition(keys, n_workers)
        actor_cls = ray.remote(num_cpus=1)(BatchWorker)
        doc = to_dict(plan.graph)
        actors = [actor_cls.remote(doc, plan.mode, plan.workflow_hash, dict(settings or {}), o.device or "cpu",
                                   c.registry_factory, c.threads_per_worker) for _ in parts]
        pending: dict[Any, int] = {}
        for actor, part in zip(actors, parts, strict=True):
            for j in part:
                pos = todo[j]
                pending[actor.run.remote(plan.items[pos], list(targets) if targets else None)] = pos
        while pending:
            if cancel.cancelled:
                cancelled = True
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
            for ref in ready:
                pos = pending.pop(ref)
                item = plan.items[pos]
                outcome = _receive(ray, ref, out_dir)
                outcomes[item.index] = outcome
                entry = manifest.record(pos, outcome)
                manifest.write()
                bar.start_item(item.name)
                bar.finish_item(outcome.status)
                if on_item is not None:
                    on_item(item, entry)
    finally:
        bar.close()
        for actor in actors:
            if not cancelled:
                with contextlib.suppress(Exception):
                    ray.get(actor.close.remote(), timeout=10)
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started_here:
            ray.shutdown()
    return BatchResult(manifest.path, manifest.to_dict(), outcomes, skipped, time.perf_counter() - t0, cancelled)
