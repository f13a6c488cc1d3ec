"""Keep Python's cyclic garbage collector on the GUI thread while a worker thread runs.

CPython starts a collection on whichever thread's allocation crosses the
threshold, and a collection frees *every* unreachable cycle in the process.
While a workflow runs, the worker thread allocates the most, so that is where
collections start -- and the cycles they free include Qt wrappers that closed
windows left behind (a :class:`~gui.canvas.GraphScene` and its graph refer to
each other through the change subscription, the window's actions hold lambdas
over the window).  Freeing a Python-owned QObject runs its C++ destructor in
that thread, but a QObject must be destroyed in the thread it lives in: a
``QGraphicsScene`` with its items torn down on the runner thread while the GUI
thread paints is a race Qt does not protect against.  It happens for real: in
the GUI test suite, collections that started on the runner thread during
``tests/gui/test_real_run.py`` (the one test whose run allocates enough to
trigger them) destroyed the 48 scenes the earlier tests had left -- a likely
cause of that test's one-off CI segfault (not reproduced locally, so not proven).

The remedy used by Qt applications with Python worker threads (calibre and
others): while a worker exists, automatic collection is off and a timer on the
GUI thread runs the collections the interpreter would have run, with the same
generation thresholds.  Work on the worker thread never triggers a collection.
"""

from __future__ import annotations

import gc

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer

INTERVAL_MS = 500  # latency of a collection; a full one costs ~75 ms with a model loaded

_holds = 0  # live GcHold objects
_reenable = False  # whether collection was enabled before the first hold
_collector: _Collector | None = None


class _Collector(QObject):
    """Owns the timer; lives on the GUI thread (child of the application)."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(collect_due)


def _on_gui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() == app.thread()


def collect_due() -> int:
    """Collect the generation the interpreter would collect now (none if the youngest
    generation is under its threshold); returns the number of unreachable objects found."""
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if t0 <= 0 or c0 <= t0:
        return 0
    gen = 2 if c2 > t2 else 1 if c1 > t1 else 0
    return gc.collect(gen)


class GcHold:
    """While held, cyclic garbage is collected on the GUI thread only.  :meth:`release` is
    idempotent; the last release re-enables automatic collection if it was enabled before."""

    def __init__(self) -> None:
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        global _holds
        if self._released:
            return
        self._released = True
        _holds -= 1
        if _holds > 0:
            return
        if _collector is not None and shiboken6.isValid(_collector):
            _collector.timer.stop()
        if _reenable:
            gc.collect()  # what piled up since the last tick, still on the GUI thread
            gc.enable()


def hold_gc_on_gui_thread() -> GcHold | None:
    """Start collecting on the GUI thread only (call from the GUI thread, before starting a
    worker thread that runs Python).  None if there is no application or this is not its thread."""
    global _holds, _reenable, _collector
    if not _on_gui_thread():
        return None
    if _holds == 0:
        _reenable = gc.isenabled()
        gc.disable()
    _holds += 1
    if _collector is None or not shiboken6.isValid(_collector):
        _collector = _Collector(QCoreApplication.instance())
    if not _collector.timer.isActive():
        _collector.timer.start()
    return GcHold()


def holds() -> int:
    """How many holds are active (for tests and diagnostics)."""
    return _holds
