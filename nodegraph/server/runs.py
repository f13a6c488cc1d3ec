"""The run queue behind the server: one worker thread owns one Executor.

Runs are executed one at a time, in submission order, by a single thread, so
the executor's cache is shared by every request (a second request with the
same checkpoint does not load it again) and the engine never runs two graphs
concurrently on one device.  Every engine event is tagged with the server's
run id and fanned out to the ``/events`` subscribers through :class:`EventHub`.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..context import CancelToken
from ..errors import WorkflowInvalid
from ..events import Event
from ..executor import Executor, RunReport
from ..graph import Graph

FINISHED = ("done", "error", "cancelled")
MAX_KEPT_RUNS = 1000


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
    """One submitted run and what became of it."""

    id: str
    graph: Graph
    targets: list[str] | None
    overrides: dict[str, Any]
    created: float = field(default_factory=time.time)
    status: str = "queued"  # queued | running | done | error | cancelled
    started: float | None = None
    finished: float | None = None
    report: RunReport | None = None
    message: str | None = None  # for errors that are not a node's (e.g. a model deleted since submit)
    cancel: CancelToken = field(default_factory=CancelToken)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "created": self.created, "started": self.started,
                "finished": self.finished,
                "outputs": [f"/runs/{self.id}/outputs/{i}" for i in range(len(self.report.outputs))]
                if self.report is not None else []}

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["overrides"] = self.overrides
        d["message"] = self.message
        d["report"] = self.report.to_dict() if self.report is not None else None
        return d


class RunQueue:
    """Submit / list / cancel runs; a daemon thread executes them in order."""

    def __init__(self, executor: Executor, hub: EventHub) -> None:
        self.executor = executor
        self.hub = hub
        self._runs: dict[str, RunRecord] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[RunRecord | None] = queue.Queue()
        self._current: RunRecord | None = None
        executor.subscribe(self._on_engine_event)
        self._thread = threading.Thread(target=self._work, name="nodegraph-runs", daemon=True)
        self._thread.start()

    # -- API ------------------------------------------------------------------------------------
    def submit(self, graph: Graph, targets: Sequence[str] | None, overrides: dict[str, Any]) -> RunRecord:
        record = RunRecord(uuid.uuid4().hex[:12], graph, list(targets) if targets else None, overrides)
        with self._lock:
            self._runs[record.id] = record
            self._prune()
        self.hub.publish({"kind": "run_queued", "run": record.id})
        self._queue.put(record)
        return record

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
        if len(self._runs) <= MAX_KEPT_RUNS:
            return
        for rid in [r.id for r in self._runs.values() if r.status in FINISHED][: len(self._runs) - MAX_KEPT_RUNS]:
            del self._runs[rid]

    def _on_engine_event(self, event: Event) -> None:
        current = self._current
        self.hub.publish({"run": current.id if current is not None else None, **event.to_dict()})

    def _work(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            with self._lock:
                if record.status != "queued":
                    continue
                record.status, record.started = "running", time.time()
                self._current = record
            self.hub.publish({"kind": "run_status", "run": record.id, "status": "running"})
            try:
                report = self.executor.run(record.graph, outputs=record.targets, cancel=record.cancel)
                status = {"ok": "done", "error": "error", "cancelled": "cancelled"}.get(report.status, "error")
                message = None
                if report.error is not None:
                    message = f"node {report.error.node_id!r} ({report.error.node_type}): {report.error.message}"
            except WorkflowInvalid as exc:
                report, status, message = None, "error", str(exc)
            except Exception as exc:  # never let one bad run kill the worker thread
                report, status, message = None, "error", f"{type(exc).__name__}: {exc}"
            with self._lock:
                record.report, record.status, record.message = report, status, message
                record.finished = time.time()
                self._current = None
            self.hub.publish({"kind": "run_status", "run": record.id, "status": status})
