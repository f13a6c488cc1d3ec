"""The editor's worker thread never runs Python's cyclic garbage collector.

A collection frees every unreachable cycle in the process, Qt wrappers included,
in the thread that started it; a QObject destroyed on the runner thread while the
GUI thread paints is a race (the GUI suite destroyed dozens of stale scenes that
way during tests/gui/test_real_run.py).  While a RunController exists, collections
run on the GUI thread only (gui/gc_guard.py), and the freed heap is returned to
the OS from the GUI thread after each run, never from the worker.
"""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QObject  # noqa: E402

import gui.runner as runner_module  # noqa: E402
import nodegraph.executor as executor_module  # noqa: E402
from gui import gc_guard  # noqa: E402
from gui.runner import RunController  # noqa: E402
from nodegraph import Executor, Graph, Int, Out, Registry, node  # noqa: E402


@node(
    "t.churn",
    inputs=[Int("n", 30_000, min=1, max=10**7), Int("seed", 0)],
    outputs=[Out("INT", "INT")],
    output_node=True,
    deterministic=False,
)
def churn(ctx: Any, n: int, seed: int) -> int:
    """Allocates many short-lived reference cycles: plenty to trigger collections here."""
    kept = 0
    batch: list[dict[str, Any]] = []
    for i in range(n):
        d: dict[str, Any] = {"i": i + seed}
        d["self"] = d
        batch.append(d)
        if len(batch) >= 500:
            kept += len(batch)
            batch = []
    return kept


def _registry() -> Registry:
    reg = Registry()
    reg.add_pack("t", [churn])
    return reg


def _graph(seed: int = 0) -> Graph:
    g = Graph()
    g.add_node("t.churn", {"n": 30_000, "seed": seed}, id="churn")
    return g


class _Orphan(QObject):
    """A Python-owned QObject that only a reference cycle keeps alive (like a closed window's scene)."""

    def __init__(self) -> None:
        super().__init__()
        self.me = self


@pytest.fixture
def collections() -> list[str]:
    """Names of the threads on which a cyclic collection started."""
    seen: list[str] = []

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(threading.current_thread().name)

    gc.callbacks.append(cb)
    yield seen
    gc.callbacks.remove(cb)


def _run(qtbot: Any, controller: RunController, graph: Graph) -> Any:
    reports: list[Any] = []
    problems: list[Any] = []
    controller.runFinished.connect(reports.append)
    controller.invalid.connect(problems.append)
    controller.failed.connect(problems.append)
    controller.submit(graph)
    qtbot.waitUntil(lambda: bool(reports), timeout=60_000)
    assert reports[0] is not None, problems
    return reports[0]


def test_worker_never_collects_and_orphaned_qt_objects_die_on_the_gui_thread(
    qtbot: Any, tmp_path: Path, collections: list[str]
) -> None:
    main = threading.current_thread().name
    controller = RunController(Executor(_registry(), device="cpu", output_dir=tmp_path))
    try:
        died_on: list[str] = []
        orphan = _Orphan()
        weakref.finalize(orphan, lambda: died_on.append(threading.current_thread().name))
        del orphan
        report = _run(qtbot, controller, _graph())
        assert report.status == "ok"
        qtbot.waitUntil(lambda: bool(died_on), timeout=10_000)  # the GUI-thread timer collects it
        assert died_on == [main]
        assert collections, "the run allocated enough cycles for collections to be due"
        assert set(collections) == {main}
    finally:
        controller.shutdown()


def test_automatic_collection_is_restored_when_the_last_controller_shuts_down(qtbot: Any, tmp_path: Path) -> None:
    assert gc.isenabled() and gc_guard.holds() == 0, "an earlier test left a RunController running"
    first = RunController(Executor(_registry(), device="cpu", output_dir=tmp_path))
    second = RunController(Executor(_registry(), device="cpu", output_dir=tmp_path))
    try:
        assert gc_guard.holds() == 2 and not gc.isenabled()
        first.shutdown()
        first.shutdown()  # idempotent: still one holder
        assert gc_guard.holds() == 1 and not gc.isenabled()
        second.shutdown()
        assert gc_guard.holds() == 0 and gc.isenabled()
    finally:  # a failed assertion must not leave a running QThread behind
        first.shutdown()
        second.shutdown()


def test_heap_is_trimmed_on_the_gui_thread_after_each_run(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gui_trims: list[str] = []
    engine_trims: list[str] = []
    monkeypatch.setattr(
        runner_module, "release_free_memory", lambda: gui_trims.append(threading.current_thread().name) or True
    )
    monkeypatch.setattr(
        executor_module, "release_free_memory", lambda: engine_trims.append(threading.current_thread().name) or True
    )
    main = threading.current_thread().name
    controller = RunController(Executor(_registry(), device="cpu", output_dir=tmp_path))
    try:
        for seed in (1, 2):
            assert _run(qtbot, controller, _graph(seed)).status == "ok"
        assert gui_trims == [main, main]
        assert engine_trims == []  # the executor does not trim on the worker thread
    finally:
        controller.shutdown()

    opted_out = RunController(Executor(_registry(), device="cpu", output_dir=tmp_path, trim_after_run=False))
    try:
        assert _run(qtbot, opted_out, _graph(3)).status == "ok"
        assert gui_trims == [main, main]
    finally:
        opted_out.shutdown()


def test_collect_due_follows_the_interpreter_thresholds() -> None:
    gc.collect()
    assert gc_guard.collect_due() == 0  # nothing allocated since: no generation is due
    was = gc.isenabled()
    gc.disable()
    try:
        junk = []
        for _ in range(gc.get_threshold()[0] + 100):
            d: dict[str, Any] = {}
            d["self"] = d
            junk.append(d)
        del junk
        assert gc.get_count()[0] > gc.get_threshold()[0]
        assert gc_guard.collect_due() >= gc.get_threshold()[0]  # the cycles above were found
        assert gc.get_count()[0] < gc.get_threshold()[0]
    finally:
        if was:
            gc.enable()
