"""The ``nodegraph`` command: run/validate/nodes, --set/-o/--report/--output/--device, exit codes 0/1/2, and a
``--help`` that does not import torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph import Graph, save_workflow
from nodegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]
NODEGRAPH = Path(sys.executable).parent / "nodegraph"


def write_workflow(path: Path, *, divisor: int = 2, broken: bool = False) -> Path:
    """int(12) // divisor -> to_string -> save_text, plus a show node."""
    g = Graph()
    g.add_node("primitives.int", {"value": 12}, id="num")
    g.add_node("primitives.int_math", {"b": divisor, "op": "floor_divide"}, id="div")
    g.connect("num", "INT", "div", "a")
    g.add_node("primitives.to_string", id="txt")
    g.connect("div", "INT", "txt", "value")
    g.add_node("primitives.save_text", {"filename_prefix": "result"}, id="save")
    g.connect("txt", "STRING", "save", "text")
    g.add_node("primitives.show", id="show")
    g.connect("div", "INT", "show", "value")
    if broken:
        g.add_node("nope.unknown", id="mystery")
        g.add_node("primitives.show", id="show2")
        g.connect("mystery", "OUT", "show2", "value")
        g.set_value("num", "value", "twelve")
    return save_workflow(g, path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()) \
        if directory.exists() else []


def test_run_ok_with_overrides_outdir_and_report(tmp_path, capsys):
    wf = write_workflow(tmp_path / "wf.json")
    before = wf.read_text()
    out_dir, report_path = tmp_path / "out", tmp_path / "report.json"
    code, out, err = run_cli(capsys, "run", str(wf), "--set", "num.value=20", "--set", "div.b=3", "-o", str(out_dir),
                             "--report", str(report_path), "--quiet")
    assert code == 0, err
    assert files_in(out_dir) == ["result_00001.txt"]
    assert (out_dir / "result_00001.txt").read_text() == "6"  # 20 // 3
    report = json.loads(report_path.read_text())
    assert set(report["nodes"]) == {"num", "div", "txt", "save", "show"}
    for entry in report["nodes"].values():
        assert entry["status"] in ("executed", "cached") and isinstance(entry["seconds"], float)
    assert report["outputs"] == [str((out_dir / "result_00001.txt").resolve())]
    assert report["status"] == "ok" and report["error"] is None
    assert out.splitlines()[0] == report["outputs"][0]  # paths on stdout, one per line
    assert "show: 6" in out
    assert "5 executed, 0 cached" in err and "\r" not in err  # --quiet: no progress bar
    assert wf.read_text() == before  # --set never writes the file


def test_invalid_workflow_exits_2_listing_every_problem_before_any_work(tmp_path, capsys):
    wf = write_workflow(tmp_path / "wf.json", broken=True)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(wf), "-o", str(out_dir), "--quiet")
    assert code == 2
    assert "2 problem(s), nothing was run" in err
    assert "node 'mystery' (nope.unknown): unknown node type 'nope.unknown'" in err
    assert "node 'num' (primitives.int) input 'value'" in err
    assert files_in(out_dir) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "div.b=abc"], "node 'div' (primitives.int_math) input 'b': cannot use 'abc'"),
        (["--set", "ghost.value=1"], "no node 'ghost' in this workflow"),
        (["--set", "div.nope=1"], "has no settable input 'nope'"),
        (["--set", "novalue"], "must look like NODE.INPUT=VALUE"),
        (["--set", "div.op=sqrt"], "'sqrt' is not an available choice"),
        (["--set", "num.value=1e400"], "input 'value'"),
        (["--output", "ghost"], "requested output node 'ghost' does not exist"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_bad_command_lines_exit_2_before_any_work(tmp_path, capsys, args, needle):
    wf = write_workflow(tmp_path / "wf.json")
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", str(wf), "-o", str(out_dir), "--quiet", *args)
    assert code == 2, err
    assert needle in err
    assert files_in(out_dir) == []


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"format": "nodegraph.workflow", "version": 9})])
def test_unreadable_workflow_exits_2(tmp_path, capsys, content):
    wf = tmp_path / "wf.json"
    if content is not None:
        wf.write_text(content)
    code, _, err = run_cli(capsys, "run", str(wf), "--quiet")
    assert code == 2 and str(wf) in err
    code, _, err = run_cli(capsys, "validate", str(wf))
    assert code == 2 and str(wf) in err


def test_failing_node_exits_1_and_still_writes_the_report(tmp_path, capsys):
    wf = write_workflow(tmp_path / "wf.json", divisor=0)
    report_path = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "run", str(wf), "-o", str(tmp_path / "out"), "--report", str(report_path),
                             "--quiet")
    assert code == 1
    assert "node 'div' (primitives.int_math), input 'b' failed: floor_divide by zero" in err
    report = json.loads(report_path.read_text())
    assert report["status"] == "error" and report["nodes"]["div"]["status"] == "error"
    assert report["error"]["node_id"] == "div" and report["error"]["input"] == "b"
    assert report["nodes"]["num"]["status"] == "executed" and report["outputs"] == []


def test_run_selected_output_only(tmp_path, capsys):
    wf = write_workflow(tmp_path / "wf.json")
    code, out, err = run_cli(capsys, "run", str(wf), "-o", str(tmp_path / "out"), "--output", "show", "--quiet",
                             "--report", str(tmp_path / "r.json"))
    assert code == 0 and out.strip() == "show: 6"
    assert set(json.loads((tmp_path / "r.json").read_text())["nodes"]) == {"num", "div", "show"}
    assert files_in(tmp_path / "out") == []


def test_validate_command(tmp_path, capsys):
    wf = write_workflow(tmp_path / "wf.json")
    code, out, _ = run_cli(capsys, "validate", str(wf))
    assert code == 0 and out.strip() == f"{wf}: valid"
    code, _, err = run_cli(capsys, "validate", str(wf), "--set", "div.b=x")
    assert code == 2 and "cannot use 'x'" in err

    bad = write_workflow(tmp_path / "bad.json", broken=True)
    code, _, err = run_cli(capsys, "validate", str(bad))
    assert code == 2 and "2 problem(s)" in err and "-> install the node pack that provides it" in err
    code, out, _ = run_cli(capsys, "validate", str(bad), "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["valid"] is False
    assert {(p["kind"], p["node_id"], p["input"]) for p in doc["problems"]} == {
        ("unknown_type", "mystery", None), ("bad_value", "num", "value")}
    assert all(p["fix"] and p["message"] and p["node_type"] for p in doc["problems"])

    g = Graph()  # something broken that no output needs: only --all reports it
    g.add_node("primitives.int", {"value": 1}, id="a")
    g.add_node("primitives.show", id="s")
    g.connect("a", "INT", "s", "value")
    g.add_node("primitives.int", {"value": "x"}, id="stray")
    partial = save_workflow(g, tmp_path / "partial.json")
    assert run_cli(capsys, "validate", str(partial))[0] == 0
    code, out, _ = run_cli(capsys, "validate", str(partial), "--all", "--json")
    assert code == 2 and [p["node_id"] for p in json.loads(out)["problems"]] == ["stray"]


def test_nodes_command_lists_full_specs(capsys):
    code, out, _ = run_cli(capsys, "nodes", "--json")
    assert code == 0
    catalogue = {d["type"]: d for d in json.loads(out)}
    spec = catalogue["primitives.int_math"]
    assert spec["pack"] == "primitives" and spec["category"] == "primitives/math"
    assert spec["outputs"] == [{"name": "INT", "type": "INT"}]
    op = next(i for i in spec["inputs"] if i["name"] == "op")
    assert op["widget"] == "COMBO" and "floor_divide" in op["choices"] and op["default"] == "add"
    assert catalogue["primitives.save_text"]["output_node"] is True
    assert catalogue["primitives.random_int"]["deterministic"] is False
    code, out, _ = run_cli(capsys, "nodes")
    assert code == 0 and "primitives/math" in out and "primitives.int_math" in out


# -- the real console script, in a subprocess -----------------------------------------------------------------------


def _script() -> list[str]:
    exe = NODEGRAPH if NODEGRAPH.exists() else shutil.which("nodegraph")
    return [str(exe)] if exe else [sys.executable, "-m", "nodegraph.cli"]


def test_console_script_exit_codes(tmp_path):
    ok = write_workflow(tmp_path / "ok.json")
    failing = write_workflow(tmp_path / "fail.json", divisor=0)
    invalid = write_workflow(tmp_path / "invalid.json", broken=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    codes = {}
    for name, wf in (("ok", ok), ("fail", failing), ("invalid", invalid)):
        proc = subprocess.run([*_script(), "run", str(wf), "-o", str(tmp_path / "out")], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=60)
        codes[name] = proc.returncode
    assert codes == {"ok": 0, "fail": 1, "invalid": 2}


def test_help_is_fast_path_without_torch(tmp_path):
    proc = subprocess.run([*_script(), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "run" in proc.stdout and "validate" in proc.stdout and "nodes" in proc.stdout
    # exactly what the console script does: import nodegraph.cli and call main()
    code = "from nodegraph.cli import main; main(['--help'])"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "nodegraph.cli" in imported
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "numpy", "PySide6", "nodes"))
    assert heavy == []
    proc = subprocess.run([*_script(), "run", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--set" in proc.stdout and "--report" in proc.stdout



def test_gc_policy_is_for_the_process_only(tmp_path, capsys, monkeypatch):
    """``main(argv)`` (tests, embedding) leaves the caller's collector as it was; the process entry point
    (``argv=None``) pauses collection through start-up, resumes it when the run starts, and freezes what
    is alive before exit -- and the run's result is the same."""
    import gc

    from nodegraph import cli

    wf = write_workflow(tmp_path / "wf.json")
    frozen = gc.get_freeze_count()
    code, _, err = run_cli(capsys, "run", str(wf), "-o", str(tmp_path / "a"), "--quiet")
    assert code == 0, err
    assert gc.isenabled() and gc.get_freeze_count() == frozen

    seen: list[bool] = []
    real = cli._resume_gc_when_run_starts

    def spy(listener):
        wrapped = real(listener)

        def on_event(event):
            seen.append(gc.isenabled())  # before the listener: start-up pause still on at RunStarted
            wrapped(event)
            seen.append(gc.isenabled())

        return on_event

    monkeypatch.setattr(cli, "_resume_gc_when_run_starts", spy)
    monkeypatch.setattr(sys, "argv", ["nodegraph", "run", str(wf), "-o", str(tmp_path / "b"), "--quiet"])
    try:
        assert cli.main() == 0
        assert gc.isenabled() and gc.get_freeze_count() > frozen  # frozen for exit
    finally:
        gc.unfreeze()  # this test process lives on
    assert seen[:2] == [False, True] and all(seen[1:])
    assert files_in(tmp_path / "a") == files_in(tmp_path / "b") == ["result_00001.txt"]
