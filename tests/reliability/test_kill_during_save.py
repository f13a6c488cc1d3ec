"""SIGKILL in the middle of a workflow save or an editor autosave leaves the previous
file intact (or the new one complete) — never a truncated workflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BUILD = """
from nodegraph import Graph
def big_graph(gen):
    g = Graph()
    g.meta["gen"] = gen
    for i in range(20000):
        g.add_node("primitives.int", {"value": i}, id=f"n{i}", ui={"pos": [i, i], "note": "x" * 40})
    return g
"""

WRITERS = {
    "workflow": """
from nodegraph import save_workflow
gen = 0
while True:
    save_workflow(big_graph(gen), TARGET)
    gen += 1
    if gen == 2:
        print("writing", flush=True)
""",
    "autosave": """
import os
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QCoreApplication
from gui.autosave import Autosaver
app = QCoreApplication([])
saver = Autosaver(TARGET, interval_ms=10_000_000)
saver.path = __import__("pathlib").Path(TARGET)  # write the file the test reads (not the per-instance name)
gen = 0
while True:
    saver.track(big_graph(gen), "wf.json")
    saver.mark_dirty()
    saver.save_now()
    gen += 1
    if gen == 2:
        print("writing", flush=True)
""",
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_sigkill_mid_save_leaves_a_complete_file(writer: str, tmp_path: Path) -> None:
    if writer == "autosave":
        pytest.importorskip("PySide6")
    target = tmp_path / "saved.json"
    code = BUILD + f"TARGET = {str(target)!r}\n" + textwrap.dedent(WRITERS[writer])
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)  # somewhere inside the next (multi-megabyte) write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    doc = json.loads(target.read_text())  # complete JSON: the old or the new file
    assert len(doc["nodes"]) == 20000 and doc["meta"]["gen"] >= 1
    from nodegraph.workflow import from_dict, save

    assert len(from_dict(doc)) == 20000
    save(from_dict(doc), target)  # the next save cleans up the temp file the kill may have left
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["saved.json"]


def test_next_save_removes_temps_of_dead_writers_only(tmp_path: Path) -> None:
    from nodegraph.fileio import atomic_write_text

    target = tmp_path / "wf.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / f".wf.json.{int(dead.stdout)}.abc123.tmp"
        running = tmp_path / f".wf.json.{live.pid}.def456.tmp"
        old_style = tmp_path / ".wf.json.x1y2z3.tmp"
        recent_old_style = tmp_path / ".wf.json.q9w8e7.tmp"
        other_file = tmp_path / ".other.json.1.abc.tmp"
        for p in (killed, running, old_style, recent_old_style, other_file):
            p.write_text("partial")
        os.utime(old_style, (time.time() - 7200, time.time() - 7200))
        atomic_write_text(target, "{}")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([target.name, running.name, recent_old_style.name, other_file.name])
    finally:
        live.kill()
        live.wait(10)
