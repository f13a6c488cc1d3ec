"""The editor opens, runs and saves a workflow holding a subgraph instance without failing (the editor's
own subgraph features -- convert, open, breadcrumb -- are a later issue; this guards the engine change)."""

from __future__ import annotations

from nodegraph import Registry, workflow
from nodegraph.subgraph import extract

from .test_run import chain, ctrl_enter


def test_a_workflow_with_a_subgraph_runs_in_the_editor(window, qtbot, tmp_path, registry: Registry):
    g = chain(steps=2)
    extract(g, registry, ["b"], "filter", promote=[("b", "steps")], instance_id="sub")
    window.set_graph(g, None)
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    report = window.last_report
    assert report.status == "ok" and report.nodes["sub/b"].status == "executed"
    path = tmp_path / "saved.json"
    workflow.save(window.graph, path)
    assert workflow.load(path).subgraphs["filter"].input("steps").default == 2
