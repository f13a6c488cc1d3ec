"""Workflow files: versioned JSON, values by name, migration, forward compatibility, atomic saves,
and headless loading."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from engine_nodes import make_executor

from nodegraph import Graph, WorkflowFileError, dump_workflow_text, load_workflow, load_workflow_text, save_workflow
from nodegraph.fileio import atomic_write_bytes
from nodegraph.workflow import CURRENT_VERSION, FORMAT, from_dict, migrate, to_dict

ROOT = Path(__file__).resolve().parents[2]


def sample_graph() -> Graph:
    g = Graph()
    g.add_node("t.const", {"value": 5}, id="c", title="Five", ui={"pos": [10, 20], "size": [200, 80]})
    g.add_node("t.add", {"b": 2}, id="a", mode="bypass", ui={"collapsed": True, "color": "#223344"})
    g.add_node("t.sink", id="s", mode="mute")
    g.connect("c", "INT", "a", "a")
    g.connect("a", "INT", "s", "value")
    g.add_group("Inputs", (0, 0, 300, 200), "#335577", id="g1")
    g.set_meta("name", "demo")
    g.set_meta("description", "a tiny graph")
    return g


def test_round_trip_is_lossless_and_values_are_keyed_by_name(tmp_path):
    g = sample_graph()
    path = save_workflow(g, tmp_path / "wf.json")
    doc = json.loads(path.read_text())
    # no subgraphs: written as version 1, which older nodegraph versions read (CURRENT_VERSION is 2)
    assert doc["format"] == FORMAT and doc["version"] == 1 and CURRENT_VERSION == 2
    assert doc["nodes"]["c"] == {"type": "t.const", "values": {"value": 5}, "title": "Five",
                                 "ui": {"pos": [10, 20], "size": [200, 80]}}
    assert doc["nodes"]["a"]["values"] == {"b": 2} and doc["nodes"]["a"]["mode"] == "bypass"
    assert doc["nodes"]["s"]["mode"] == "mute"
    assert {"from": ["c", "INT"], "to": ["a", "a"]} in doc["links"]
    assert doc["groups"] == [{"id": "g1", "title": "Inputs", "bounds": [0, 0, 300, 200], "color": "#335577"}]
    assert doc["meta"] == {"name": "demo", "description": "a tiny graph"}

    g2 = load_workflow(path)
    assert dump_workflow_text(g2) == dump_workflow_text(g)
    assert g2.node("a").mode == "bypass" and g2.node("c").title == "Five" and g2.node("a").ui["collapsed"]
    assert g2.links == g.links and g2.groups["g1"].bounds == (0, 0, 300, 200)


def test_value_order_in_the_file_does_not_matter():
    """Values are keyed by input name, so reordering them (or a node type gaining an input) changes nothing."""
    a = load_workflow_text(json.dumps({"format": FORMAT, "version": 1, "nodes": {
        "x": {"type": "t.add", "values": {"a": 1, "b": 2}}}, "links": []}))
    b = load_workflow_text(json.dumps({"format": FORMAT, "version": 1, "nodes": {
        "x": {"type": "t.add", "values": {"b": 2, "a": 1}}}, "links": []}))
    assert a.node("x").values == b.node("x").values == {"a": 1, "b": 2}


def test_v0_compact_form_migrates_and_runs(tmp_path):
    v0 = {"nodes": {
        "1": {"type": "t.const", "inputs": {"value": 4}},
        "2": {"type": "t.add", "inputs": {"a": ["1", "INT"], "b": 3}, "title": "plus"},
        3: {"type": "t.sink", "inputs": {"value": [2, "INT"]}},
    }}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(v0))
    g = load_workflow(path)
    assert g.node("2").values == {"b": 3} and g.node("2").title == "plus"
    assert {(lk.src, lk.src_output, lk.dst, lk.dst_input) for lk in g.links} == {
        ("1", "INT", "2", "a"), ("2", "INT", "3", "value")}
    report = make_executor(tmp_path).run(g)
    assert report.ok and report.ui["3"]["value"] == 7
    doc = to_dict(g)
    assert doc["version"] == 1 and "inputs" not in doc["nodes"]["2"]  # no subgraphs: saved as version 1
    # migrate() alone upgrades the document
    assert migrate(json.loads(json.dumps(v0)))["version"] == CURRENT_VERSION


def test_newer_version_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"format": FORMAT, "version": CURRENT_VERSION + 1, "nodes": {}, "links": []}))
    with pytest.raises(WorkflowFileError) as exc:
        load_workflow(path)
    msg = str(exc.value)
    assert str(path) in msg and "newer nodegraph" in msg and f"version {CURRENT_VERSION + 1}" in msg
    assert "upgrade nodegraph" in msg


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("{not json", "not valid JSON (line 1, column 2"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"format": "comfyui", "version": 1}), "not a nodegraph workflow"),
        (json.dumps({"format": FORMAT, "version": "one"}), "'version' must be a non-negative integer"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": []}), "'nodes' must be an object"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {"a": {}}}), "node 'a' has no 'type'"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {"a": {"type": "t.add", "values": [1, 2]}}}),
         "'values' must be an object keyed by input name"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {"a": {"type": "t.add", "mode": "off"}}}),
         "'mode' must be one of"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {}, "links": [{"from": "a"}]}),
         "link #0 must look like"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {"a": {"type": "t.const"}, "b": {"type": "t.add"}},
                     "links": [{"from": ["a", "INT"], "to": ["b", "a"]}, {"from": ["a", "INT"], "to": ["b", "a"]}]}),
         "input 'a' is fed by more than one link"),
        ("[" * 100_000, "nested too deeply"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {}, "groups": [{"id": "g"}, {"id": "g"}]}),
         "group id 'g' already exists"),
        (json.dumps({"format": FORMAT, "version": 1, "nodes": {"": {"type": "t.add"}}}), "node id must not be empty"),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, doc, needle):
    path = tmp_path / "bad.json"
    path.write_text(doc)
    with pytest.raises(WorkflowFileError) as exc:
        load_workflow(path)
    assert needle in str(exc.value) and str(path) in str(exc.value)


def test_missing_file_is_a_workflow_file_error(tmp_path):
    with pytest.raises(WorkflowFileError, match="file not found"):
        load_workflow(tmp_path / "nope.json")


def test_unknown_future_fields_survive_a_round_trip():
    doc = {
        "format": FORMAT, "version": 1, "x_top": {"plugin": [1, 2]}, "meta": {"name": "n", "x_meta": True},
        "nodes": {
            "c": {"type": "t.const", "values": {"value": 1}, "x_node": "keep me", "ui": {"x_ui": 5}},
            "s": {"type": "t.sink", "values": {}},
        },
        "links": [{"from": ["c", "INT"], "to": ["s", "value"], "x_link": {"curve": "bezier"}},
                  {"from": ["ghost", "OUT"], "to": ["s", "other"], "x_dangling": 1}],
        "groups": [{"id": "g", "title": "G", "bounds": [0, 0, 1, 1], "x_group": "z"}],
    }
    g = from_dict(json.loads(json.dumps(doc)))
    assert g.extra == {"x_top": {"plugin": [1, 2]}}
    assert g.node("c").extra == {"x_node": "keep me"}
    assert g.link_into("s", "value").extra == {"x_link": {"curve": "bezier"}}
    assert g.groups["g"].extra == {"x_group": "z"}
    out = json.loads(dump_workflow_text(g))
    assert out["x_top"] == {"plugin": [1, 2]} and out["meta"]["x_meta"] is True
    assert out["nodes"]["c"]["x_node"] == "keep me" and out["nodes"]["c"]["ui"] == {"x_ui": 5}
    assert {"from": ["c", "INT"], "to": ["s", "value"], "x_link": {"curve": "bezier"}} in out["links"]
    # a link to a node that does not exist is kept (and reported by validation), not dropped
    assert {"from": ["ghost", "OUT"], "to": ["s", "other"], "x_dangling": 1} in out["links"]
    assert out["groups"][0]["x_group"] == "z"
    assert json.loads(dump_workflow_text(load_workflow_text(dump_workflow_text(g)))) == out


def test_loads_headless_without_qt_or_torch(tmp_path):
    path = save_workflow(sample_graph(), tmp_path / "wf.json")
    code = textwrap.dedent(f"""
        import sys
        import nodegraph
        from nodegraph import Registry, load_workflow, validate
        from nodes import primitives
        g = load_workflow({str(path)!r})
        reg = Registry()
        primitives.register(reg)
        validate(g, reg, scope="all")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "PySide6", "PyQt5", "PyQt6",
                                                                  "shiboken6", "numpy", "diffusers"))
        print(len(g), heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env=dict(os.environ, QT_QPA_PLATFORM=""))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3 []"


# -- atomic saves ---------------------------------------------------------------------------------------------


def _tmp_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch, failing):
    path = save_workflow(sample_graph(), tmp_path / "wf.json")
    before = path.read_bytes()

    g = sample_graph()
    for i in range(200):
        g.add_node("t.const", {"value": i}, id=f"extra{i}")

    class Crash(Exception):
        pass

    if failing == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            """Writes half the data to the temp file, then 'crashes'."""

            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                raise Crash("disk unplugged")

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    elif failing == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(Crash("power cut")))
    else:
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(Crash("killed before rename")))

    with pytest.raises(Crash):
        save_workflow(g, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    assert load_workflow(path).nodes.keys() == {"c", "a", "s"}
    assert _tmp_leftovers(tmp_path) == []  # and no temp file lingers
    save_workflow(g, path)  # the next save works
    assert len(load_workflow(path)) == 203 and _tmp_leftovers(tmp_path) == []


def test_atomic_write_survives_sigkill_of_the_writer(tmp_path):
    """A writer killed with SIGKILL at an arbitrary moment while rewriting a multi-megabyte file leaves
    either the old or a new complete file, never a truncated mix."""
    target = tmp_path / "big.json"
    atomic_write_bytes(target, json.dumps({"gen": -1, "pad": "x" * 4_000_000}).encode())
    code = textwrap.dedent(f"""
        import json, sys
        from nodegraph.fileio import atomic_write_bytes
        gen = 0
        while True:
            atomic_write_bytes({str(target)!r}, json.dumps({{"gen": gen, "pad": "y" * 4_000_000}}).encode())
            gen += 1
            if gen == 2:
                print("writing", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.15)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    doc = json.loads(target.read_text())  # parses: complete
    assert doc["gen"] >= 1 and doc["pad"] == "y" * 4_000_000


def test_atomic_save_keeps_permissions_and_new_files_follow_the_umask(tmp_path):
    """The temp file starts 0600 (mkstemp); a save must not silently make a shared workflow private."""
    path = tmp_path / "wf.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    save_workflow(sample_graph(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = save_workflow(sample_graph(), tmp_path / "new.json")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
