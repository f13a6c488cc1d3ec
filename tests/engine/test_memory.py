"""Heap trimming after runs (nodegraph.memory) and which thread does it.

The executor trims after a run on the main thread by default (scripts, CLI) and
leaves runs on other threads to their owner: the editor trims from its GUI
thread once its worker finished, the API server opts in for its worker thread.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from engine_nodes import chain, make_executor, make_registry

import nodegraph.executor as executor_module
import nodegraph.memory as memory
from nodegraph import Graph
from nodegraph.server.app import NodegraphServer


def _rss() -> int:
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that asked the executor module for a trim."""
    seen: list[str] = []

    def record() -> bool:
        seen.append(threading.current_thread().name)
        return True

    monkeypatch.setattr(executor_module, "release_free_memory", record)
    return seen


def _run_in_thread(fn) -> None:  # noqa: ANN001 - any callable
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    t = threading.Thread(target=target, name="not-main")
    t.start()
    t.join(30)
    assert not t.is_alive()
    if errors:
        raise errors[0]


@pytest.mark.skipif(not memory.trim_supported(), reason="needs glibc's malloc_trim (Linux)")
def test_release_free_memory_gives_freed_heap_pages_back_to_the_os() -> None:
    # 1 KiB objects come from malloc (above pymalloc's 512-byte limit); keeping every 64th
    # alive pins the heap, so free() alone cannot return the space between them.
    blocks = [bytes([i & 255]) * 1024 for i in range(60_000)]  # ~60 MiB, every page touched
    keep = blocks[::64]
    del blocks
    before = _rss()
    assert memory.release_free_memory() is True
    after = _rss()
    assert len(keep) == 938
    assert before - after > 20 * 2**20, f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"


def test_release_free_memory_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_looked_up", True)
    monkeypatch.setattr(memory, "_trim", None)
    assert memory.trim_supported() is False
    assert memory.release_free_memory() is False


def test_run_on_the_main_thread_trims_once_even_when_a_node_fails(tmp_path: Path, trims: list[str]) -> None:
    ex = make_executor(tmp_path)
    assert ex.trim_after_run is None
    ex.run(chain(4)).raise_for_status()
    assert trims == ["MainThread"]
    g = Graph()
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("t.fail", id="f")
    g.add_node("t.sink", id="s")
    g.connect("c", "INT", "f", "x")
    g.connect("f", "INT", "s", "value")
    ex.settings["fail"] = True
    assert ex.run(g).status == "error"
    assert trims == ["MainThread", "MainThread"]


def test_run_on_another_thread_does_not_trim_unless_asked(tmp_path: Path, trims: list[str]) -> None:
    ex = make_executor(tmp_path)
    assert ex.trims_in_this_thread() is True
    _run_in_thread(lambda: ex.run(chain(4)).raise_for_status())
    assert trims == []
    ex.trim_after_run = True
    _run_in_thread(lambda: ex.run(chain(5)).raise_for_status())
    assert trims == ["not-main"]


def test_trim_after_run_false_never_trims(tmp_path: Path, trims: list[str]) -> None:
    ex = make_executor(tmp_path, trim_after_run=False)
    ex.run(chain(4)).raise_for_status()
    assert ex.trims_in_this_thread() is False
    assert trims == []


def test_api_server_trims_on_its_run_thread(tmp_path: Path, trims: list[str]) -> None:
    server = NodegraphServer("127.0.0.1", 0, registry=make_registry(), device="cpu", output_dir=tmp_path)
    try:
        assert server.executor.trim_after_run is True
        record = server.api.runs.submit(chain(4), None, {})
        deadline = time.monotonic() + 30
        while record.status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert record.status == "done", record.message
        assert trims == ["nodegraph-runs"]  # inside Executor.run, so before the status changed
    finally:
        server.close()
