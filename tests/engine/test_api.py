"""The documented Python API flow (nodegraph/__init__.py): load a workflow, apply overrides, run it twice
with one long-lived executor, read the per-node report and the output files.  Plus overrides and the
terminal progress bar."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nodegraph
from nodegraph import Graph, OverrideError, apply_overrides, save_workflow
from nodegraph.events import NodeFinished, NodeProgress, NodeStarted, RunFinished, RunStarted
from nodegraph.progress import TerminalProgress

ROOT = Path(__file__).resolve().parents[2]


def caption_workflow(path: Path) -> Path:
    """seed -> to_string -> join with a prefix -> save_text (+ show): primitives only."""
    g = Graph()
    g.add_node("primitives.seed", {"seed": 1}, id="seed")
    g.add_node("primitives.to_string", id="as_text")
    g.connect("seed", "seed", "as_text", "value")
    g.add_node("primitives.string", {"value": "render"}, id="name")
    g.add_node("primitives.concat", {"separator": "-"}, id="join")
    g.connect("name", "STRING", "join", "a")
    g.connect("as_text", "STRING", "join", "b")
    g.add_node("primitives.save_text", {"filename_prefix": "captions/cap"}, id="save")
    g.connect("join", "STRING", "save", "text")
    g.add_node("primitives.show", id="show")
    g.connect("name", "STRING", "show", "value")
    return save_workflow(g, path)


def test_readme_flow_load_override_run_twice_report(tmp_path):
    path = caption_workflow(tmp_path / "captions.json")

    graph = nodegraph.load_workflow(path)
    executor = nodegraph.Executor(device="auto", output_dir=tmp_path / "out")  # keeps its cache
    nodegraph.apply_overrides(graph, executor.registry, {"seed.seed": 7})
    report = executor.run(graph)

    assert report.ok and report.status == "ok"
    assert {nid: r.status for nid, r in report.nodes.items()} == {
        "seed": "executed", "as_text": "executed", "name": "executed", "join": "executed", "save": "executed",
        "show": "executed"}
    assert all(isinstance(r.seconds, float) and 0 <= r.seconds < 5 for r in report.nodes.values())
    assert len(report.outputs) == 1
    out = Path(report.outputs[0])
    assert out.is_file() and out.read_text() == "render-7"
    assert out.parent == (tmp_path / "out" / "captions").resolve()
    assert report.ui["show"] == {"text": "render"}

    # the same executor again: everything comes from its cache, the output file is reported again
    again = executor.run(graph)
    assert {r.status for r in again.nodes.values()} == {"cached"}
    assert again.outputs == report.outputs

    # change one value: only that node and what follows re-run (README: graph.set_value)
    graph.set_value("seed", "seed", 8)
    third = executor.run(graph)
    assert sorted(third.executed()) == ["as_text", "join", "save", "seed"]
    assert sorted(third.cached()) == ["name", "show"]
    assert Path(third.outputs[0]).read_text() == "render-8"

    d = json.loads(json.dumps(third.to_dict()))
    assert set(d["nodes"]["seed"]) >= {"status", "seconds"} and d["outputs"] == third.outputs
    assert path.read_text() == (tmp_path / "captions.json").read_text()  # overrides never touch the file
    assert json.loads(path.read_text())["nodes"]["seed"]["values"] == {"seed": 1}


def test_running_primitives_imports_neither_torch_nor_qt(tmp_path):
    path = caption_workflow(tmp_path / "captions.json")
    code = textwrap.dedent(f"""
        import sys
        import nodegraph
        g = nodegraph.load_workflow({str(path)!r})
        ex = nodegraph.Executor(device="auto", output_dir={str(tmp_path / "out")!r})
        assert ex.run(g).ok
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "PySide6", "shiboken6")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- overrides --------------------------------------------------------------------------------------------------


def _graph() -> tuple[Graph, nodegraph.Registry]:
    from engine_nodes import make_registry

    g = Graph()
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("primitives.float_math", id="my.math")  # ids may contain dots
    g.add_node("t.sink", id="s")
    g.connect("c", "INT", "s", "value")
    return g, make_registry()


def test_overrides_parse_by_widget_type_in_both_forms():
    g, reg = _graph()
    apply_overrides(g, reg, ["c.value=42", "my.math.op=multiply", "my.math.b= 2.5 "])
    assert g.node("c").values["value"] == 42
    assert g.node("my.math").values == {"op": "multiply", "b": 2.5}
    apply_overrides(g, reg, {"c.value": 7.0, "my.math.a": 3})
    assert g.node("c").values["value"] == 7 and isinstance(g.node("c").values["value"], int)
    assert g.node("my.math").values["a"] == 3.0 and isinstance(g.node("my.math").values["a"], float)


def test_override_problems_are_all_reported_and_nothing_is_applied():
    g, reg = _graph()
    with pytest.raises(OverrideError) as exc:
        apply_overrides(g, reg, ["c.value=abc", "ghost.seed=1", "s.value=3", "c.nope=1", "novalue", "my.math.b=2",
                                 "my.math.op=7"])
    msg = str(exc.value)
    assert "node 'c' (t.const) input 'value': cannot use 'abc'" in msg
    assert "no node 'ghost' in this workflow (node ids: c, my.math, s)" in msg
    assert "node 's' (t.sink) has no settable input 'value' (settable inputs: none)" in msg
    assert "has no settable input 'nope' (settable inputs: value)" in msg
    assert "'novalue' must look like NODE.INPUT=VALUE" in msg
    assert msg.count("\n  - ") == 5  # "my.math.op=7" is fine: a COMBO takes text
    assert g.node("my.math").values == {} and g.node("c").values == {"value": 1}  # all or nothing


# -- terminal progress ---------------------------------------------------------------------------------------------


def test_terminal_progress_draws_only_when_enabled():
    stream = io.StringIO()
    bar = TerminalProgress(stream, enabled=True, width=10)
    bar(RunStarted("r", ("a", "b")))
    bar(NodeStarted("r", "a", "t.x"))
    bar(NodeProgress("r", "a", 2, 4))
    bar(NodeProgress("r", "a", 4, 4))
    bar(NodeFinished("r", "a", "t.x", "executed", 0.1))
    text = stream.getvalue()
    assert "[----------] 0/2 a (t.x)" in text and "step 4/4" in text
    assert "[#####-----] 1/2 a executed" in text
    bar(RunFinished("r", "ok", 0.2))
    assert stream.getvalue().endswith("\r")
    quiet = io.StringIO()
    assert not TerminalProgress(quiet).enabled  # a StringIO is not a TTY
    TerminalProgress(quiet)(RunStarted("r", ("a",)))
    assert quiet.getvalue() == ""


def test_public_api_exports_resolve():
    missing = [name for name in nodegraph.__all__ if not hasattr(nodegraph, name)]
    assert missing == []
    assert {"Executor", "load_workflow", "apply_overrides", "save_workflow", "node", "Registry"} <= set(
        nodegraph.__all__)


def test_override_of_a_linked_input_is_refused_instead_of_silently_ignored():
    g, reg = _graph()
    g.add_node("t.add", id="sum")
    g.connect("c", "INT", "sum", "a")
    with pytest.raises(OverrideError, match=r"input 'a' is fed by a link from node 'c'; override that node"):
        apply_overrides(g, reg, ["sum.a=5"])
    apply_overrides(g, reg, ["sum.b=5", "c.value=2"])
    assert g.node("sum").values == {"b": 5}


def test_readme_node_pack_example_registers_and_runs(tmp_path):
    """The "Writing a node pack" snippet in README.md is real code: it registers through the public API
    and runs (on a torch tensor, as written)."""
    torch = pytest.importorskip("torch")
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```python")[1:]
    snippet = next((b.split("```")[0] for b in blocks if "def register(registry)" in b), None)
    assert snippet is not None, "README lost its node-pack example"
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    reg = nodegraph.Registry()
    namespace["register"](reg)
    spec = next(iter(reg))
    assert spec.pack == "mypack" and spec.description  # docstring becomes the description

    @nodegraph.node("readme.image", outputs=[nodegraph.Out("IMAGE", "IMAGE")])
    def image(ctx):
        return torch.full((1, 2, 2, 3), 0.4)

    reg.add(image)
    g = Graph()
    g.add_node("readme.image", id="img")
    g.add_node(spec.type_id, {"amount": 2.0}, id="pack_node")
    g.connect("img", "IMAGE", "pack_node", "image")
    report = nodegraph.Executor(reg, device="cpu", output_dir=tmp_path).run(g, outputs=["pack_node"])
    out = next(iter(report.results["pack_node"].values()))
    assert torch.allclose(out, torch.full((1, 2, 2, 3), 0.8))
