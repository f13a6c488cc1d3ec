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
    from nodegraph.workflow import from_dict

    assert len(from_dict(doc)) == 20000
