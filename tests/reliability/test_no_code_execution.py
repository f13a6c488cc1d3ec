"""Workflow files are data: loading, validating and running one never imports or
executes anything the file names.  Only installed node packs supply code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph import Executor, Registry, WorkflowInvalid
from nodegraph.workflow import loads
from nodes import primitives

HOSTILE = {
    "format": "nodegraph.workflow",
    "version": 1,
    "meta": {"description": "__import__('os').system('touch PWNED')"},
    "nodes": {
        "a": {"type": "os.system", "values": {"command": "touch PWNED"}},
        "b": {"type": "subprocess.run", "values": {"args": ["touch", "PWNED"]}},
        "c": {"type": "builtins.eval", "values": {"source": "__import__('os').system('touch PWNED')"}},
        "d": {"type": "primitives.string", "values": {"value": "{{__import__('os').system('touch PWNED')}}"}},
        "e": {"type": "primitives.save_text", "values": {"filename_prefix": "${HOME}/../PWNED"}},
    },
    "links": [{"from": ["d", "STRING"], "to": ["e", "text"]}],
    "py/object": "os.system",
}


def test_hostile_workflow_runs_nothing_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    graph = loads(json.dumps(HOSTILE))
    assert set(sys.modules) == before  # loading imported nothing
    reg = Registry()
    primitives.register(reg)
    with pytest.raises(WorkflowInvalid) as err:
        Executor(reg, device="cpu", output_dir=tmp_path / "out").run(graph)
    kinds = {(i.node_id, i.kind) for i in err.value.issues}
    assert {("a", "unknown_type"), ("b", "unknown_type"), ("c", "unknown_type")} <= kinds
    assert not list(tmp_path.rglob("PWNED*"))
    # The known nodes alone: text is data, and the prefix cannot leave the output folder (refused by
    # validation, before anything runs).
    for nid in ("a", "b", "c"):
        graph.remove_node(nid)
    with pytest.raises(WorkflowInvalid) as err:
        Executor(reg, device="cpu", output_dir=tmp_path / "out").run(graph)
    assert [(i.node_id, i.input) for i in err.value.issues] == [("e", "filename_prefix")]
    assert not list(tmp_path.rglob("PWNED*"))


def test_cli_validate_of_hostile_file_imports_nothing_it_names(tmp_path: Path) -> None:
    wf = tmp_path / "hostile.json"
    wf.write_text(json.dumps(HOSTILE))
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", "validate", str(wf)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "unknown node type 'os.system'" in proc.stderr
    assert not list(tmp_path.rglob("PWNED*"))
