"""The run queue behind the server: one worker thread owns one Executor.

Runs are executed one at a time, in submission order, by a single thread, so
the executor's cache is shared by every request (a second request with the
same checkpoint does not load it again) and the engine never runs two graphs
concurrently on one device.  Every engine event is tagged with the server's
run id and fanned out to the ``/events`` subscribers through :class:`EventHub`.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..context import CancelToken
from ..errors import WorkflowInvalid
from ..events import Event
from ..executor import Executor, RunReport
from ..graph import Graph
from .redact import Redactor

FINISHED = ("done", "error", "cancelled")
MAX_KEPT_RUNS = 200  # finished records kept for GET /runs (each is small: no workflow, no values)
MAX_QUEUED = 16  # runs waiting; one more is answered 429
MAX_REPORT_NODES = 500  # per-node lines kept in a finished record's report
MAX_EVENT_TEXT = 4096  # characters of any one string in a streamed event
log = logging.getLogger("nodegraph.server")


class QueueFull(Exception):
    """The run queue holds its maximum of waiting runs."""


class EventHub:
    """Fan-out of JSON-able event dicts to any number of subscriber queues.

    A slow subscriber never blocks the engine: when its queue is full the oldest
    event is dropped and a ``dropped`` count is added to the next one it gets."""

    def __init__(self, maxsize: int = 2000) -> None:
        self._subs: list[queue.Queue[dict[str, Any] | None]] = []
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._seq = itertools.count(1)
        self.closed = threading.Event()

    def subscribe(self) -> queue.Queue[dict[str, Any] | None]:
        q: queue.Queue[dict[str, Any] | None] = queue.Queue(self._maxsize)
        with self._lock:
            self._subs.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            if q in self._subs:
                self._subs.remove(q)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, event: dict[str, Any]) -> None:
        event = {"seq": next(self._seq), **event}
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            while True:
                try:
                    q.put_nowait(event)
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass

    def close(self) -> None:
        self.closed.set()
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            try:
                q.put_nowait(None)
            except queue.Full:
                pass


@dataclass
class RunRecord:
    """One submitted run and what became of it.

    The workflow is held only while the run waits or runs; a finished record keeps a compact,
    redacted report (statuses, timings, output names, the error's message) so that hundreds of
    them cost little memory and never show tracebacks or absolute paths."""

    id: str
    graph: Graph | None
    targets: list[str] | None
    overrides: dict[str, Any] | None
    created: float = field(default_factory=time.time)
    status: str = "queued"  # queued | running | done | error | cancelled
    started: float | None = None
    finished: float | None = None
    report: dict[str, Any] | None = None  # compact_report()
    files: list[str] = field(default_factory=list)  # absolute paths written, served by index
    message: str | None = None  # for errors that are not a node's (e.g. a model deleted since submit)
    cancel: CancelToken = field(default_factory=CancelToken)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "created": self.created, "started": self.started,
                "finished": self.finished,
                "outputs": [f"/runs/{self.id}/outputs/{i}" for i in range(len(self.files))]}

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["overrides"] = self.overrides
        d["message"] = self.message
        d["report"] = self.report
        return d


def compact_report(report: RunReport, output_dir: Path, redact: Redactor) -> dict[str, Any]:
    """What a finished record keeps of a run report: no values, no display data, no traceback."""
    nodes = {}
    for nid, r in itertools.islice(report.nodes.items(), MAX_REPORT_NODES):
        line: dict[str, Any] = {"type": r.type, "status": r.status, "seconds": round(r.seconds, 6)}
        if r.reason is not None:
            line["reason"] = redact.text(r.reason)
        nodes[nid] = line
    root = output_dir.resolve()
    outputs = []
    for f in report.outputs:
        p = Path(f).resolve()
        outputs.append(p.relative_to(root).as_posix() if root in p.parents else "<path>")
    d: dict[str, Any] = {"status": report.status, "seconds": round(report.seconds, 6), "nodes": nodes,
                         "outputs": outputs, "error": None}
    if report.stats:  # e.g. "memory": device budget, resident, offloaded and peak bytes of the run
        d["stats"] = redact.value(report.stats)
    if len(report.nodes) > MAX_REPORT_NODES:
        d["nodes_omitted"] = len(report.nodes) - MAX_REPORT_NODES
    if report.error is not None:
        e = report.error
        d["error"] = {"node_id": e.node_id, "node_type": e.node_type, "input": e.input,
                      "message": redact.text(e.message)}
    return d


class RunQueue:
    """Submit / list / cancel runs; a daemon thread executes them in order."""

    def __init__(self, executor: Executor, hub: EventHub, redact: Redactor | None = None, *,
                 max_queued: int = MAX_QUEUED, max_kept: int = MAX_KEPT_RUNS) -> None:
        self.executor = executor
        self.hub = hub
        self.redact = redact or Redactor([])
        self.max_queued, self.max_kept = max_queued, max_kept
        self._runs: dict[str, RunRecord] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[RunRecord | None] = queue.Queue()
        self._current: RunRecord | None = None
        executor.subscribe(self._on_engine_event)
        self._thread = threading.Thread(target=self._work, name="nodegraph-runs", daemon=True)
        self._thread.start()

    # -- API ------------------------------------------------------------------------------------
    def submit(self, graph: Graph, targets: Sequence[str] | None, overrides: dict[str, Any] | None) -> RunRecord:
        """Queue a validated graph; :class:`QueueFull` when ``max_queued`` runs already wait."""
        record = RunRecord(uuid.uuid4().hex[:12], graph, list(targets) if targets else None, overrides)
        with self._lock:
            if sum(1 for r in self._runs.values() if r.status == "queued") >= self.max_queued:
                raise QueueFull(f"{self.max_queued} runs are already waiting")
            self._runs[record.id] = record
            self._prune()
        self.hub.publish({"kind": "run_queued", "run": record.id})
        self._queue.put(record)
        return record

    @property
    def queued(self) -> int:
        """Runs waiting to start."""
        with self._lock:
            return sum(1 for r in self._runs.values() if r.status == "queued")

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def list(self) -> list[RunRecord]:
        with self._lock:
            return list(self._runs.values())

    def cancel(self, run_id: str) -> RunRecord | None:
        """Cancel a queued run at once, or ask a running one to stop at its next step."""
        with self._lock:
            record = self._runs.get(run_id)
            if record is None:
                return None
            record.cancel.cancel()
            if record.status == "queued":
                record.status, record.finished = "cancelled", time.time()
                record.graph = None
                changed = True
            else:
                changed = False
        if changed:
            self.hub.publish({"kind": "run_status", "run": record.id, "status": "cancelled"})
        return record

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what runs, drop what is queued, and end the worker thread."""
        for record in self.list():
            if record.status in ("queued", "running"):
                self.cancel(record.id)
        self._queue.put(None)
        self._thread.join(timeout)

    # -- worker ---------------------------------------------------------------------------------
    def _prune(self) -> None:
        done = [r.id for r in self._runs.values() if r.status in FINISHED]
        for rid in done[: max(0, len(done) - self.max_kept)]:
            del self._runs[rid]

    def _on_engine_event(self, event: Event) -> None:
        current = self._current
        data = self.redact.value(event.to_dict(), max_text=MAX_EVENT_TEXT)  # no traceback, no paths
        self.hub.publish({"run": current.id if current is not None else None, **data})

    def _work(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            with self._lock:
                if record.status != "queued" or record.graph is None:
                    continue
                record.status, record.started = "running", time.time()
                self._current = record
            self.hub.publish({"kind": "run_status", "run": record.id, "status": "running"})
            report, status, message = self._execute(record)
            with self._lock:
                record.status, record.message = status, message
                if report is not None:
                    record.files = list(report.outputs)
                    record.report = compact_report(report, self.executor.output_dir, self.redact)
                record.finished = time.time()
                record.graph = None  # the workflow is not needed any more
                self._current = None
                self._prune()
            self.hub.publish({"kind": "run_status", "run": record.id, "status": status})

    def _execute(self, record: RunRecord) -> tuple[RunReport | None, str, str | None]:
        assert record.graph is not None
        try:
            report = self.executor.run(record.graph, outputs=record.targets, cancel=record.cancel)
        except WorkflowInvalid as exc:  # e.g. a model file deleted since it was queued
            return None, "error", self.redact.text(str(exc))
        except Exception:  # never let one bad run kill the worker thread
            log.exception("run %s failed inside the engine", record.id)
            return None, "error", "internal error while running (details are in the server's log)"
        status = {"ok": "done", "error": "error", "cancelled": "cancelled"}.get(report.status, "error")
        message = None
        if report.error is not None:
            e = report.error
            if e.traceback:
                log.warning("run %s: node %r (%s) failed:\n%s", record.id, e.node_id, e.node_type, e.traceback)
            message = self.redact.text(f"node {e.node_id!r} ({e.node_type}): {e.message}")
        return report, status, message
