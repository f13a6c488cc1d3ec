"""Runs workflows off the UI thread.

One worker ``QThread`` owns one long-lived :class:`nodegraph.Executor` (so its
result cache survives between runs and a re-run after a small edit only
recomputes what changed).  The UI thread only ever *queues* a snapshot of the
graph and *receives* events as Qt signals (queued connections), so it never
waits for a model to load or a sampler to step.  Preview arrays are turned into
``QImage`` on the worker, where the copy costs the UI nothing.

Memory: while the worker thread exists, Python's cyclic garbage collector runs
on the UI thread only (:mod:`gui.gc_guard` says why), and once a run has finished
the UI thread returns the heap pages it freed to the OS
(:func:`nodegraph.memory.release_free_memory`; the executor itself trims only
on the main thread, so this never happens during a run).
"""

from __future__ import annotations

import atexit
import itertools
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtGui import QImage

from nodegraph import CancelToken, Executor, Graph, WorkflowInvalid
from nodegraph.events import Event, NodeProgress
from nodegraph.memory import release_free_memory

from .gc_guard import collect_due, hold_gc_on_gui_thread

# Workers still inside a node that cannot be interrupted when their window closed.  A
# QThread destroyed while running aborts the process ("QThread: Destroyed while thread is
# still running"), so each one is kept alive here and the process waits for it at exit
# (the window is already gone by then, so the wait freezes nothing the user sees).
_DETACHED: list[tuple[QThread, QObject, Any]] = []


def _wait_for_detached() -> None:
    """atexit: let detached workers finish (their runs are cancelled: they stop at the
    next node boundary) before the interpreter tears their objects down."""
    while _DETACHED:
        thread, _worker, hold = _DETACHED.pop()
        if thread.isRunning():
            print("nodegraph: waiting for the running node to finish (the run is cancelled)...",
                  file=sys.stderr, flush=True)
            thread.wait()
        if hold is not None:
            hold.release()


atexit.register(_wait_for_detached)


def detached_workers() -> int:
    """How many closed windows' workers are still finishing a node.  Finished ones are
    dropped here and their GC hold released, so automatic collection comes back once the
    last of them is done (call from the GUI thread)."""
    for d in [d for d in _DETACHED if d[0].isFinished()]:
        _DETACHED.remove(d)
        if d[2] is not None:
            d[2].release()
    return len(_DETACHED)


def array_to_qimage(arr: Any) -> QImage | None:
    """HxWx3 (or HxWx4) uint8 array → an owned QImage (None if it is not one)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
        else:
            return None
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        return None
    a = np.ascontiguousarray(a)
    h, w, c = a.shape
    fmt = QImage.Format.Format_RGB888 if c == 3 else QImage.Format.Format_RGBA8888
    return QImage(a.data, w, h, w * c, fmt).copy()  # copy: own the pixels, drop the numpy buffer


_UNSET = object()


@dataclass
class RunJob:
    """One queued run: the graph snapshot taken when the user pressed Run."""

    job_id: int
    graph: Graph
    outputs: list[str] | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    owner: Any = None  # who queued it (the editor's tab): its events are shown there
    config: dict[str, Any] = field(default_factory=dict)  # executor settings in force for this run


class _Worker(QObject):
    event = Signal(int, object, object)  # job id, engine event, preview QImage|None
    invalid = Signal(int, object)  # job id, list[ValidationIssue]
    finished = Signal(int, object)  # job id, RunReport | None
    failed = Signal(int, str)

    def __init__(self, executor: Executor) -> None:
        super().__init__()
        self.executor = executor
        self._applied: dict[str, Any] = {}

    def _configure(self, config: dict[str, Any]) -> None:
        """On the worker thread, between runs: settings changed in the editor (threads, cache
        budget) reach the executor here, so a running node never sees them change."""
        from nodegraph.executor import cache_budget

        changed = {k: v for k, v in config.items() if self._applied.get(k, _UNSET) != v}
        if not changed:
            return
        for key, value in changed.items():
            if value is None:
                self.executor.settings.pop(key, None)
            else:
                self.executor.settings[key] = value
        self._applied.update(changed)
        if "cache_budget" in changed:  # None: the default again (half the RAM available now)
            self.executor.cache.set_budget(cache_budget(None, self.executor.settings))

    @Slot(object)
    def run(self, job: RunJob) -> None:
        def forward(ev: Event) -> None:
            preview = None
            if isinstance(ev, NodeProgress) and ev.preview is not None:
                preview = array_to_qimage(ev.preview)
            self.event.emit(job.job_id, ev, preview)

        try:
            self._configure(job.config)
            if job.cancel.cancelled:
                self.finished.emit(job.job_id, None)
                return
            report = self.executor.run(job.graph, outputs=job.outputs, on_event=forward, cancel=job.cancel)
        except WorkflowInvalid as exc:
            self.invalid.emit(job.job_id, exc.issues)
            self.finished.emit(job.job_id, None)
            return
        except Exception as exc:  # an engine bug must not kill the worker thread
            self.failed.emit(job.job_id, f"{type(exc).__name__}: {exc}")
            self.finished.emit(job.job_id, None)
            return
        self.finished.emit(job.job_id, report)


class RunController(QObject):
    """Queue of runs on one worker thread.  Signals arrive on the UI thread."""

    event = Signal(object, object)  # engine event, preview QImage|None
    invalid = Signal(object)  # list[ValidationIssue]
    runFinished = Signal(object)  # RunReport | None
    failed = Signal(str)
    queueChanged = Signal(int)  # runs waiting (not counting the running one)
    busyChanged = Signal(bool)
    jobFinished = Signal(int, object, object)  # job id, the graph it ran, RunReport | None
    _submit = Signal(object)

    def __init__(self, executor: Executor, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.executor = executor
        self._ids = itertools.count(1)
        self._queue: deque[RunJob] = deque()
        self._current: RunJob | None = None
        self._signal_job: RunJob | None = None  # set while a job's signals are emitted
        self._config: dict[str, Any] = {}  # executor settings for the runs queued from now on
        self.thread = QThread()
        self.thread.setObjectName("nodegraph-runner")
        self._worker = _Worker(executor)
        self._worker.moveToThread(self.thread)
        self._submit.connect(self._worker.run)
        self._worker.event.connect(self._on_event)
        self._worker.invalid.connect(self._on_invalid)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._shut_down = False
        self._gc_hold = hold_gc_on_gui_thread()  # before the worker can allocate anything
        self.thread.start()

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current_graph(self) -> Graph | None:
        """The snapshot the running job executes (None when idle)."""
        return self._current.graph if self._current is not None else None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, graph: Graph, outputs: list[str] | None = None, owner: Any = None) -> int:
        """Queue a run of a *snapshot* of ``graph`` (later edits do not affect it).

        ``owner`` tags the job (the editor tab that queued it): runs of every tab share
        this one worker and its executor cache, and while a job's signals are emitted
        :attr:`signal_owner` says whose they are."""
        job = RunJob(next(self._ids), graph.copy(), outputs, owner=owner, config=dict(self._config))
        self._queue.append(job)
        self._pump()
        self.queueChanged.emit(len(self._queue))
        return job.job_id

    def configure(self, **settings: Any) -> None:
        """Executor settings (``threads``, ``cache_budget``, ``vram_budget``; None = back to the default) for
        the runs queued from now on.  The worker applies them before such a run starts: the
        executor is only ever touched on its own thread, and never during a run."""
        self._config.update(settings)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def pending(self) -> list[RunJob]:
        """The runs waiting, in the order they will run (not the running one)."""
        return list(self._queue)

    @property
    def current_job(self) -> RunJob | None:
        return self._current

    @property
    def signal_owner(self) -> Any:
        """The owner of the job whose signal is being delivered (event, invalid, failed,
        runFinished, jobFinished); None outside of them or for jobs queued without one."""
        return self._signal_job.owner if self._signal_job is not None else None

    def remove(self, job_id: int) -> bool:
        """Drop a waiting run (the running one is stopped with :meth:`cancel`)."""
        for job in self._queue:
            if job.job_id == job_id:
                job.cancel.cancel()
                self._queue.remove(job)
                self.queueChanged.emit(len(self._queue))
                return True
        return False

    def move(self, job_id: int, index: int) -> bool:
        """Put a waiting run at position ``index`` of the queue (clamped)."""
        jobs = list(self._queue)
        for i, job in enumerate(jobs):
            if job.job_id == job_id:
                jobs.pop(i)
                jobs.insert(max(0, min(index, len(jobs))), job)
                self._queue = deque(jobs)
                self.queueChanged.emit(len(self._queue))
                return True
        return False

    def cancel(self, clear_queue: bool = False) -> None:
        """Stop the running job (at its next step or node boundary)."""
        if clear_queue:
            for job in self._queue:
                job.cancel.cancel()
            self._queue.clear()
            self.queueChanged.emit(0)
        if self._current is not None:
            self._current.cancel.cancel()

    def cancel_owner(self, owner: Any) -> None:
        """Drop the waiting runs ``owner`` queued and stop its running one (a tab closes)."""
        mine = [job for job in self._queue if job.owner is owner]
        for job in mine:
            job.cancel.cancel()
            self._queue.remove(job)
        if mine:
            self.queueChanged.emit(len(self._queue))
        if self._current is not None and self._current.owner is owner:
            self._current.cancel.cancel()

    def _pump(self) -> None:
        if self._current is None and self._queue:
            self._current = self._queue.popleft()
            self.busyChanged.emit(True)
            self._submit.emit(self._current)
            self.queueChanged.emit(len(self._queue))

    def _is_current(self, job_id: int) -> bool:
        return self._current is not None and self._current.job_id == job_id

    def _emit_for(self, job: RunJob | None, signal: Any, *args: Any) -> None:
        self._signal_job = job
        try:
            signal.emit(*args)
        finally:
            self._signal_job = None

    def _on_event(self, job_id: int, ev: Event, preview: QImage | None) -> None:
        if self._is_current(job_id):
            self._emit_for(self._current, self.event, ev, preview)

    def _on_invalid(self, job_id: int, issues: list) -> None:
        if self._is_current(job_id):
            self._emit_for(self._current, self.invalid, issues)

    def _on_failed(self, job_id: int, message: str) -> None:
        if self._is_current(job_id):
            self._emit_for(self._current, self.failed, message)

    def _on_finished(self, job_id: int, report: Any) -> None:
        if not self._is_current(job_id):
            return
        job, self._current = self._current, None
        self._emit_for(job, self.jobFinished, job_id, job.graph if job is not None else None, report)
        self._emit_for(job, self.runFinished, report)
        self.busyChanged.emit(False)
        self._release_memory()
        self._pump()

    def _release_memory(self) -> None:
        """Between runs, on the UI thread: collect what the run left in cycles, then return
        the freed heap pages to the OS (unless the executor trims itself or was told not to)."""
        collect_due()
        if self.executor.trim_after_run is None:
            release_free_memory()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and stop the thread (call before the app quits).

        Waits at most ``timeout_ms`` (0: not at all) for the node that is running.  A
        worker still busy after that (a checkpoint load cannot be interrupted) is
        detached: kept alive until it finishes and waited for at process exit.
        Returns True if the thread has stopped."""
        if self._shut_down:  # already cancelled and detached if need be: only wait (again)
            return self.thread.wait(timeout_ms) if timeout_ms > 0 else self.thread.isFinished()
        self.cancel(clear_queue=True)
        self.thread.quit()
        stopped = self.thread.wait(timeout_ms) if timeout_ms > 0 else self.thread.isFinished()
        if stopped:
            if self._gc_hold is not None:
                self._gc_hold.release()
        else:
            # a worker that did not stop keeps collection on the UI thread until it has
            _DETACHED.append((self.thread, self._worker, self._gc_hold))
        self._gc_hold = None
        self._shut_down = True
        return stopped
