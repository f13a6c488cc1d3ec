"""Runs a plan: topological order, cache lookups, events, cancellation.

One long-lived :class:`Executor` keeps its :class:`~nodegraph.cache.ResultCache`
across runs, so re-running after a small edit only recomputes what the edit
touched.  The executor is small on purpose: planning lives in
:mod:`nodegraph.plan`, what nodes compute lives in their packs.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import CacheEntry, ResultCache, entry_nbytes
from .context import CancelToken, NodeContext
from .device import DevicePolicy
from .errors import Cancelled, NodeInputError
from .events import (
    Event,
    EventListener,
    NodeError,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    NodeStats,
    RunFinished,
    RunStarted,
    json_safe,
)
from .graph import Graph
from .memory import release_free_memory
from .plan import Plan, build_plan
from .registry import Registry
from .spec import NodeResult, NodeSpec
from .workflow import to_dict


@dataclass
class NodeReport:
    type: str
    status: str  # executed | cached | skipped | error | not_run
    seconds: float = 0.0
    reason: str | None = None


@dataclass
class ErrorInfo:
    node_id: str
    node_type: str
    input: str | None
    message: str
    traceback: str = ""


@dataclass
class RunReport:
    """What happened in one run, per node, plus the files written."""

    run_id: str
    status: str = "ok"  # ok | error | cancelled
    seconds: float = 0.0
    nodes: dict[str, NodeReport] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: ErrorInfo | None = None
    # Output values of the requested target nodes ({node id: {output name: value}}),
    # so Python callers can ask for any node's result, not only files.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Last figures nodes published per statistic name (``NodeContext.stats``), e.g. "memory".
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def executed(self) -> list[str]:
        return [nid for nid, r in self.nodes.items() if r.status == "executed"]

    def cached(self) -> list[str]:
        return [nid for nid, r in self.nodes.items() if r.status == "cached"]

    def raise_for_status(self) -> None:
        if self.status == "cancelled":
            raise Cancelled("run cancelled")
        if self.error is not None:
            e = self.error
            where = f"node {e.node_id!r} ({e.node_type})" + (f", input {e.input!r}" if e.input else "")
            raise RuntimeError(f"{where}: {e.message}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "nodes": {
                nid: {k: v for k, v in (("type", r.type), ("status", r.status), ("seconds", round(r.seconds, 6)),
                                        ("reason", r.reason)) if v is not None}
                for nid, r in self.nodes.items()
            },
            "outputs": list(self.outputs),
            "ui": {nid: json_safe(u) for nid, u in self.ui.items()},
            "error": None,
        }
        if self.stats:
            d["stats"] = {k: json_safe(v) for k, v in self.stats.items()}
        if self.error is not None:
            e = self.error
            d["error"] = {"node_id": e.node_id, "node_type": e.node_type, "input": e.input,
                          "message": e.message, "traceback": e.traceback}
        return d



def cache_budget(cache_bytes: int | None, settings: Mapping[str, Any]) -> int:
    """The result cache's budget: ``cache_bytes`` if given, else ``settings["cache_budget"]`` (bytes or a
    size text such as "4G" or "25%", how the CLI, server and editor pass ``--cache-budget``), else
    :func:`nodegraph.memory.default_cache_budget` (half the RAM available at start)."""
    from .memory import default_cache_budget, parse_size

    if cache_bytes is not None:
        return cache_bytes
    if settings.get("cache_budget") is not None:
        return parse_size(settings["cache_budget"])
    return default_cache_budget()

class Executor:
    """Evaluates graphs; holds the result cache between runs.

    Thread-safe in the sense the GUI needs: one run at a time (others wait),
    cancellation from any thread through a :class:`CancelToken`.

    ``trim_after_run`` returns the heap pages a run freed to the OS once it ends
    (:func:`nodegraph.memory.release_free_memory`), which keeps a long-lived
    executor's resident memory flat.  ``None`` (default) trims only when
    :meth:`run` is called on the process's main thread -- scripts, ``nodegraph
    run``/``batch`` -- and leaves runs on other threads to their owner: the
    editor trims from its GUI thread after its worker finished, the API server
    passes ``True`` for its plain worker thread.  ``False`` never trims.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        device: str = "auto",
        cache_bytes: int | None = None,
        output_dir: str | Path = "output",
        settings: Mapping[str, Any] | None = None,
        trim_after_run: bool | None = None,
    ) -> None:
        self.registry = registry if registry is not None else Registry.with_installed_packs()
        self.device_policy = DevicePolicy(device)
        self.settings: dict[str, Any] = dict(settings or {})
        self.cache = ResultCache(cache_budget(cache_bytes, self.settings))
        self.output_dir = Path(output_dir)
        self._listeners: list[EventListener] = []
        self._lock = threading.Lock()
        self.trim_after_run = trim_after_run
        #: Per-executor objects of packs (``NodeContext.services``), e.g. a device-memory manager.
        self.services: dict[str, Any] = {}

    def trims_in_this_thread(self) -> bool:
        """Whether a run called from the current thread ends with a heap trim (see the class doc)."""
        if self.trim_after_run is None:
            return threading.current_thread() is threading.main_thread()
        return self.trim_after_run

    def subscribe(self, listener: EventListener) -> None:
        """Receive every event of every run (in the thread that runs)."""
        self._listeners.append(listener)

    def plan(self, graph: Graph, outputs: Sequence[str] | None = None) -> Plan:
        """The plan :meth:`run` would execute (same cache keys, so ``plan.keys[n] in executor.cache``
        tells whether node ``n`` would come from the cache)."""
        return build_plan(graph, self.registry, outputs, output_dir=str(self.output_dir.resolve()),
                          settings=self.settings)

    def run(
        self,
        graph: Graph,
        *,
        outputs: Sequence[str] | None = None,
        on_event: EventListener | None = None,
        cancel: CancelToken | None = None,
        output_dir: str | Path | None = None,
    ) -> RunReport:
        """Validate, plan and run ``graph``.

        Raises :class:`~nodegraph.errors.WorkflowInvalid` before doing any work
        if the graph cannot run.  A node failure or a cancel does *not* raise:
        the returned report says ``status`` "error"/"cancelled" (call
        :meth:`RunReport.raise_for_status` to turn it into an exception).
        """
        with self._lock:
            snapshot = graph.copy()  # the editor may keep editing while we run
            out_dir = Path(output_dir) if output_dir is not None else self.output_dir
            plan = build_plan(snapshot, self.registry, outputs, output_dir=str(out_dir.resolve()),
                              settings=self.settings)
            try:
                report = self._run_plan(snapshot, plan, on_event, cancel or CancelToken(), out_dir)
                _alias_results(plan, report)
                return report
            finally:
                if self.trims_in_this_thread():
                    release_free_memory()

    # -- internals -----------------------------------------------------------------------
    def _emit(self, event: Event, on_event: EventListener | None) -> None:
        for listener in self._listeners:
            listener(event)
        if on_event is not None:
            on_event(event)

    def _run_plan(self, graph: Graph, plan: Plan, on_event: EventListener | None, cancel: CancelToken,
                  output_dir: Path) -> RunReport:
        run_id = uuid.uuid4().hex[:12]
        report = RunReport(run_id)
        # The planned graph: ``graph`` itself, or its flattened copy (inner nodes have path ids).
        # ``graph`` stays what is embedded in written files: the workflow as the user made it.
        planned = plan.graph if plan.graph is not None else graph
        t_run = time.perf_counter()
        emit = self._emit
        emit(RunStarted(run_id, tuple(plan.order)), on_event)
        for nid, reason in plan.skipped.items():
            report.nodes[nid] = NodeReport(planned.nodes[nid].type, "skipped", reason=reason)
            emit(NodeFinished(run_id, nid, planned.nodes[nid].type, "skipped"), on_event)
        for nid in plan.order:
            report.nodes[nid] = NodeReport(plan.specs[nid].type_id, "not_run")

        memo: dict[str, CacheEntry] = {}  # this run's results by key (cache hits are pinned here)
        targets = set(plan.targets)
        # Backward pass: which nodes must produce a result.  Targets must; a needed node
        # found in the cache is pinned in the memo and needs nothing upstream -- so when
        # everything after, say, an evicted checkpoint loader is cached, the loader is
        # not re-run.  ``readers`` are the needed nodes that will execute (or reuse an
        # identical branch's result from this run): only they read upstream results.
        needed = targets & plan.keys.keys()
        readers: set[str] = set()
        for nid in reversed(plan.order):
            if nid not in needed:
                continue
            key = plan.keys[nid]
            if key not in memo:
                entry = self._cached(plan.specs[nid], key)
                if entry is not None:
                    memo[key] = entry
            if key in memo:
                continue
            readers.add(nid)
            for src, _ in plan.sources[nid].values():
                needed.add(src)
        # Readers still to run, per cache key: identical branches share one result.
        remaining: dict[str, int] = {}
        for nid in readers:
            for src, _ in plan.sources[nid].values():
                remaining[plan.keys[src]] = remaining.get(plan.keys[src], 0) + 1
        target_keys = {plan.keys[t] for t in targets if t in plan.keys}
        workflow_doc: dict[str, Any] | None = None
        try:
            for nid in plan.order:
                cancel.check()
                spec = plan.specs[nid]
                key = plan.keys[nid]
                t0 = time.perf_counter()
                entry = memo.get(key)
                if nid not in needed:
                    # Everything that reads it came from the cache: not computed, not
                    # fetched -- only peeked at so the report keeps its display data.
                    status = "cached"
                    entry = entry or self.cache.get(key)
                elif entry is not None:
                    status = "cached"
                else:
                    status = "executed"
                    if workflow_doc is None:
                        workflow_doc = to_dict(graph)
                    entry = self._execute(graph, plan, nid, spec, memo, on_event, cancel, output_dir,
                                          run_id, workflow_doc, report)
                    if spec.deterministic:
                        self.cache.put(key, entry)
                    memo[key] = entry
                if entry is not None and nid in targets and spec.outputs:
                    report.results[nid] = dict(zip(spec.output_names(), entry.outputs, strict=True))
                seconds = time.perf_counter() - t0
                report.nodes[nid] = NodeReport(spec.type_id, status, seconds)
                ui = entry.ui if entry is not None else None
                if entry is not None and entry.files:
                    report.outputs.extend(entry.files)
                if ui:
                    report.ui[nid] = ui
                emit(NodeFinished(run_id, nid, spec.type_id, status, seconds, ui or None), on_event)
                if nid not in readers:
                    continue
                # Release upstream results nobody else in this run still needs.
                for src, _ in plan.sources[nid].values():
                    src_key = plan.keys[src]
                    remaining[src_key] -= 1
                    if remaining[src_key] <= 0 and src_key not in target_keys:
                        memo.pop(src_key, None)
        except Cancelled:
            report.status = "cancelled"
        except _NodeFailed as failed:
            report.status = "error"
            report.error = failed.info
            report.nodes[failed.info.node_id] = NodeReport(failed.info.node_type, "error", failed.seconds)
        finally:
            report.seconds = time.perf_counter() - t_run
        emit(RunFinished(run_id, report.status, report.seconds), on_event)
        return report

    def _cached(self, spec: NodeSpec, key: str) -> CacheEntry | None:
        """A usable cached result, or None (a ``cache_valid`` hook may reject it, e.g. its file is gone)."""
        entry = self.cache.get(key)
        if entry is not None and spec.cache_valid is not None and not spec.cache_valid(entry):
            self.cache.discard(key)
            return None
        return entry

    def _execute(self, graph: Graph, plan: Plan, nid: str, spec: NodeSpec, memo: Mapping[str, CacheEntry],
                 on_event: EventListener | None, cancel: CancelToken, output_dir: Path, run_id: str,
                 workflow_doc: Mapping[str, Any], report: RunReport) -> CacheEntry:
        kwargs = dict(plan.constants[nid])
        for name, (src, out) in plan.sources[nid].items():
            src_entry = memo[plan.keys[src]]
            kwargs[name] = src_entry.outputs[plan.specs[src].output_names().index(out)]

        def progress(step: int, total: int, preview: Any = None) -> None:
            self._emit(NodeProgress(run_id, nid, step, total, preview), on_event)

        def stats(name: str, data: Mapping[str, Any]) -> None:
            report.stats[name] = dict(data)
            self._emit(NodeStats(run_id, nid, name, dict(data)), on_event)

        ctx = NodeContext(nid, spec.type_id, self.device_policy, output_dir, cancel, self.settings,
                          workflow_doc, progress, services=self.services, _stats=stats)
        self._emit(NodeStarted(run_id, nid, spec.type_id), on_event)
        t0 = time.perf_counter()
        try:
            result = spec.fn(ctx, **kwargs)
            entry = _normalise(spec, result)
        except Cancelled:
            raise
        except Exception as exc:
            info = _error_info(nid, spec, exc)
            if _is_oom(exc):
                # Give the memory back before the user retries with smaller settings.
                self.cache.clear()
                self.device_policy.empty_cache()
                info.message += (" — out of memory: cached models were released; lower the resolution or "
                                 "batch size, or use a tiled node")
            self._emit(NodeError(run_id, nid, spec.type_id, info.input, info.message, info.traceback), on_event)
            raise _NodeFailed(info, time.perf_counter() - t0) from exc
        entry.nbytes = entry_nbytes(entry)
        return entry


def _alias_results(plan: Plan, report: RunReport) -> None:
    """Results of requested subgraph instances, by their output names (read from the
    inner nodes that feed those outputs)."""
    for inst, outs in plan.aliases.items():
        values = {name: report.results[src][out] for name, (src, out) in outs.items()
                  if out in report.results.get(src, {})}
        if values:
            report.results[inst] = values


class _NodeFailed(Exception):
    def __init__(self, info: ErrorInfo, seconds: float) -> None:
        super().__init__(info.message)
        self.info = info
        self.seconds = seconds


def _error_info(nid: str, spec: NodeSpec, exc: BaseException) -> ErrorInfo:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, NodeInputError):
        msg = exc.message + (f" -> {exc.fix}" if exc.fix else "")
        if exc.details:
            msg += "\n" + "\n".join(f"  {d}" for d in exc.details)
        return ErrorInfo(nid, spec.type_id, exc.input, msg, tb)
    return ErrorInfo(nid, spec.type_id, None, f"{type(exc).__name__}: {exc}", tb)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()[:200]


def _normalise(spec: NodeSpec, result: Any) -> CacheEntry:
    """Turn whatever the node function returned into an entry with one value per output."""
    ui: dict[str, Any] = {}
    files: list[str] = []
    if isinstance(result, NodeResult):
        ui, files, result = dict(result.ui), [str(f) for f in result.files], result.outputs
    n = len(spec.outputs)
    if n == 0:
        outputs: tuple[Any, ...] = ()
    elif isinstance(result, dict) and set(result) == set(spec.output_names()):
        outputs = tuple(result[name] for name in spec.output_names())
    elif n == 1 and not (isinstance(result, tuple) and len(result) == 1):
        outputs = (result,)
    elif isinstance(result, (tuple, list)) and len(result) == n:
        outputs = tuple(result)
    else:
        raise TypeError(f"node function returned {type(result).__name__}, expected {n} output(s) "
                        f"{spec.output_names()}")
    return CacheEntry(outputs, ui, files)

