"""Several editors at once: one recovery file per instance, locked; every crashed one is offered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from gui.autosave import Autosaver, InstanceLock  # noqa: E402
from nodegraph import Graph  # noqa: E402


def _graph(value: int) -> Graph:
    g = Graph()
    g.add_node("primitives.int", {"value": value}, id="n")
    return g


def _saver(qtbot, base: Path, value: int) -> Autosaver:
    s = Autosaver(base, interval_ms=3_600_000)
    s.track(_graph(value), None)
    s.mark_dirty()
    assert s.save_now() == s.path
    return s


def test_two_instances_write_two_files_and_a_clean_exit_keeps_the_others(qtbot, tmp_path: Path) -> None:
    base = tmp_path / "recovery" / "autosave.json"
    first, second = _saver(qtbot, base, 1), _saver(qtbot, base, 2)
    assert first.path != second.path and first.path.exists() and second.path.exists()
    first.close()  # clean exit of the first editor
    assert not first.path.exists() and second.path.exists()
    # the second is still running: nothing is an orphan for a third editor
    third = Autosaver(base, interval_ms=3_600_000)
    assert third.pending() is None
    second.lock.release()  # the second editor is killed
    info = third.pending()
    assert info is not None and info["path"] == str(second.path) and info["others"] == 0
    graph, _ = third.load()
    assert graph.node("n").values == {"value": 2}
    assert third.path.exists() and not second.path.exists()  # adopted: protected by the third's lock


def test_every_crashed_instance_is_offered_newest_first(qtbot, tmp_path: Path) -> None:
    base = tmp_path / "autosave.json"
    crashed = [_saver(qtbot, base, k) for k in range(3)]
    for k, s in enumerate(crashed):
        os.utime(s.path, (1000 + k, 1000 + k))
        s.lock.release()
    seen = []
    for _ in range(3):  # one per start-up: recovered or declined, the next start offers the next one
        starter = Autosaver(base, interval_ms=3_600_000)
        info = starter.pending()
        assert info is not None
        seen.append(json.loads(Path(info["path"]).read_text())["nodes"]["n"]["values"]["value"])
        starter.discard()  # declined
        starter.close()
    assert seen == [2, 1, 0]
    assert Autosaver(base, interval_ms=3_600_000).pending() is None


def test_the_lock_dies_with_the_process(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    code = ("import sys, time; sys.path.insert(0, '.'); from pathlib import Path;"
            "from gui.autosave import InstanceLock;"
            f"assert InstanceLock(Path({str(lock)!r})).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert InstanceLock.held(lock)
    finally:
        proc.kill()
        proc.wait(10)
    assert not InstanceLock.held(lock)


def test_legacy_shared_file_is_still_offered(qtbot, tmp_path: Path) -> None:
    base = tmp_path / "autosave.json"
    base.write_text(json.dumps({"nodes": {"n": {"type": "primitives.int"}}, "meta": {"recovery": {"source": None}}}))
    s = Autosaver(base, interval_ms=3_600_000)
    assert s.pending()["path"] == str(base)
