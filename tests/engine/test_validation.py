"""Validation before running: every error kind, all reported at once, each naming node id, node type,
input and a fix; linear and recursion-free on 10,000-node graphs."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

import pytest
from engine_nodes import chain, make_executor, make_registry

from nodegraph import Graph, Link, ValidationIssue, WorkflowInvalid, build_plan, validate

REG = make_registry()


def broken_graph() -> Graph:
    """One graph holding one instance of every per-node error kind, each feeding its own sink."""
    g = Graph()

    def sink(src: str, out: str) -> None:
        g.add_node("t.sink", id=f"sink_{src}")
        g.connect(src, out, f"sink_{src}", "value")

    g.add_node("nope.missing_pack", id="unk")  # unknown_type
    sink("unk", "OUT")
    g.add_node("t.filter", id="noimg")  # missing_input (link-only input not connected)
    sink("noimg", "IMAGE")
    g.add_node("t.image", id="img")
    g.add_node("t.add", id="mismatch")  # type_mismatch: IMAGE into INT
    g.connect("img", "IMAGE", "mismatch", "a")
    sink("mismatch", "INT")
    g.add_node("t.const", {"value": 5000}, id="range")  # out_of_range (max 1000)
    sink("range", "INT")
    g.add_node("primitives.int_math", {"op": "sqrt"}, id="choice")  # not_in_choices
    sink("choice", "INT")
    g.add_node("t.add", {"a": "abc"}, id="badval")  # bad_value
    sink("badval", "INT")
    g.add_node("t.add", id="cyc1")  # cycle
    g.add_node("t.add", id="cyc2")
    g.connect("cyc1", "INT", "cyc2", "a")
    g.connect("cyc2", "INT", "cyc1", "a")
    sink("cyc2", "INT")
    g.add_node("t.const", id="c")
    g.add_node("t.add", id="noport")  # dangling_link: output name that does not exist
    g.connect("c", "NOPE", "noport", "a")
    sink("noport", "INT")
    g.add_node("t.add", id="ghostfed")  # dangling_link: from a node that does not exist (as loaded from a file)
    g.dangling_links.append(Link("ghost", "INT", "ghostfed", "b"))
    sink("ghostfed", "INT")
    g.add_node("t.add", id="extra_in")  # unknown_input
    g.connect("c", "INT", "extra_in", "zzz")
    sink("extra_in", "INT")
    g.add_node("t.image", id="img2")
    g.add_node("t.to_mask", id="byp", mode="bypass")  # bypass_unresolved: MASK out, only an IMAGE in
    g.connect("img2", "IMAGE", "byp", "image")
    sink("byp", "MASK")
    return g


EXPECTED = {
    ("unknown_type", "unk", "nope.missing_pack", None),
    ("missing_input", "noimg", "t.filter", "image"),
    ("type_mismatch", "mismatch", "t.add", "a"),
    ("out_of_range", "range", "t.const", "value"),
    ("not_in_choices", "choice", "primitives.int_math", "op"),
    ("bad_value", "badval", "t.add", "a"),
    ("cycle", "cyc1", "t.add", None),
    ("dangling_link", "noport", "t.add", "a"),
    ("dangling_link", "ghostfed", "t.add", "b"),
    ("unknown_input", "extra_in", "t.add", "zzz"),
    ("bypass_unresolved", "sink_byp", "t.sink", "value"),
    ("unknown_node", None, None, None),
}


def test_every_error_kind_is_reported_at_once_naming_node_type_input_and_fix():
    g = broken_graph()
    targets = [n.id for n in g if n.type == "t.sink"] + ["ghost_output"]
    with pytest.raises(WorkflowInvalid) as exc:
        build_plan(g, REG, targets)
    issues = exc.value.issues
    got = {(i.kind, i.node_id, i.node_type, i.input) for i in issues}
    assert got == EXPECTED
    assert len(issues) == len(EXPECTED)  # nothing reported twice (e.g. missing_input on a dangling input)
    for issue in issues:
        text = str(issue)
        assert issue.fix and issue.message
        if issue.node_id is not None:
            assert f"node {issue.node_id!r}" in text and f"({issue.node_type})" in text
        if issue.input is not None:
            assert f"input {issue.input!r}" in text
        assert issue.to_dict()["kind"] == issue.kind
    by_kind = {i.kind: i for i in issues}
    assert "'ghost_output'" in by_kind["unknown_node"].message
    assert "cyc1" in by_kind["cycle"].message and "cyc2" in by_kind["cycle"].message
    assert "'add'" in by_kind["not_in_choices"].fix  # tells the user what to pick
    assert "between -1000 and 1000" in by_kind["out_of_range"].fix
    assert "IMAGE" in by_kind["type_mismatch"].message and "INT" in by_kind["type_mismatch"].message
    assert "'ghost'" in {i.node_id: i for i in issues if i.kind == "dangling_link"}["ghostfed"].message
    # the exception text lists every problem too
    assert str(exc.value).count("\n  - ") == len(EXPECTED)


def test_no_outputs():
    g = Graph()
    g.add_node("t.const", id="c")
    issues = validate(g, REG)
    assert [(i.kind, i.node_id) for i in issues] == [("no_outputs", None)]
    assert "add an output node" in issues[0].fix
    g.add_node("t.sink", id="s", mode="mute")  # a muted output node does not count
    g.connect("c", "INT", "s", "value")
    assert [i.kind for i in validate(g, REG)] == ["no_outputs"]
    g.set_mode("s", "normal")
    assert validate(g, REG) == []


def test_scope_needed_ignores_unrelated_breakage_scope_all_reports_it():
    g = chain(4)
    g.add_node("t.const", {"value": 99999}, id="stray2")
    assert validate(g, REG) == []
    g.add_node("nope.type", id="stray")
    # An unknown type may be an output node of a missing pack: running "all outputs"
    # must not silently drop it (unless muted), but asking for specific outputs may.
    assert [(i.kind, i.node_id) for i in validate(g, REG)] == [("unknown_type", "stray")]
    assert validate(g, REG, targets=["nout"]) == []
    g.set_mode("stray", "mute")
    assert validate(g, REG) == []
    g.set_mode("stray", "normal")
    assert {(i.kind, i.node_id) for i in validate(g, REG, scope="all")} == {
        ("unknown_type", "stray"), ("out_of_range", "stray2")}


def test_value_checks_use_declared_widget_types():
    g = Graph()
    g.add_node("t.filter", {"strength": 1.5}, id="f")  # FLOAT out of range
    g.add_node("t.image", id="i")
    g.connect("i", "IMAGE", "f", "image")
    g.add_node("t.sink", id="s")
    g.connect("f", "IMAGE", "s", "value")
    assert [(i.kind, i.input) for i in validate(g, REG)] == [("out_of_range", "strength")]
    g.set_value("f", "strength", "0.25")  # text from a form / CLI is coerced
    assert validate(g, REG) == []
    assert build_plan(g, REG).constants["f"] == {"strength": 0.25}
    g.set_value("f", "strength", True)  # a bool is not a number
    assert [(i.kind, i.input) for i in validate(g, REG)] == [("bad_value", "strength")]
    g.set_value("f", "strength", float("inf"))
    assert [(i.kind, i.input) for i in validate(g, REG)] == [("bad_value", "strength")]


def test_fingerprint_may_blame_an_input(tmp_path):
    g = Graph()
    g.add_node("t.read", {"path": str(tmp_path / "missing.txt")}, id="r")
    g.add_node("t.sink", id="s")
    g.connect("r", "STRING", "s", "value")
    issues = validate(g, REG)
    assert [(i.kind, i.node_id, i.input) for i in issues] == [("bad_value", "r", "path")]
    assert "does not exist" in issues[0].message and issues[0].fix == "pick an existing file"


def test_links_may_feed_widget_inputs_and_wildcards_accept_anything():
    g = Graph()
    g.add_node("t.const", {"value": 3}, id="c")
    g.add_node("t.add", {"b": 1}, id="a")
    g.connect("c", "INT", "a", "a")  # INT output into an INT widget input
    g.add_node("t.image", id="i")
    g.add_node("primitives.reroute", id="r")  # "*" in, "*" out
    g.connect("i", "IMAGE", "r", "input")
    g.add_node("t.filter", id="f")
    g.connect("r", "output", "f", "image")  # "*" output into IMAGE input
    for src, out in (("a", "INT"), ("f", "IMAGE")):
        g.add_node("t.sink", id=f"s{src}")
        g.connect(src, out, f"s{src}", "value")
    assert validate(g, REG) == []
    g.add_node("primitives.float_math", id="fm")
    g.connect("c", "INT", "fm", "a")  # INT into FLOAT: no silent conversion
    g.add_node("t.sink", id="sfm")
    g.connect("fm", "FLOAT", "sfm", "value")
    assert [(i.kind, i.node_id, i.input) for i in validate(g, REG)] == [("type_mismatch", "fm", "a")]


# -- scale: linear, no recursion ---------------------------------------------------------------------------------


@contextmanager
def low_recursion_limit(headroom: int = 120):
    """Allow only ``headroom`` frames beyond the current depth: any recursion proportional to the graph
    size would raise RecursionError."""
    depth, f = 0, sys._getframe()
    while f is not None:
        depth, f = depth + 1, f.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def test_10000_node_chain_validates_plans_and_runs_without_recursion(tmp_path):
    g = chain(10_000)
    ex = make_executor(tmp_path)
    with low_recursion_limit():
        assert validate(g, REG) == []
        plan = build_plan(g, REG)
        report = ex.run(g)
    assert plan.order[0] == "n0" and plan.order[-1] == "nout" and len(plan.order) == 10_000
    assert report.ok and report.ui["nout"]["value"] == 9_998
    assert len(report.executed()) == 10_000


def test_10000_node_cycle_is_detected_without_recursion():
    g = chain(10_000)
    g.connect("n9998", "INT", "n1", "b")  # close a loop through 9,998 nodes
    with low_recursion_limit():
        issues = validate(g, REG)
    assert [i.kind for i in issues] == ["cycle"]
    assert "n1" in issues[0].message and "n9998" in issues[0].message
    g.remove_node("n5000")  # breaks the loop (n5001.a falls back to its default)
    with low_recursion_limit():
        assert validate(g, REG) == [] and validate(g, REG, scope="all") == []


def test_many_cycles_are_each_reported():
    g = Graph()
    for k in range(3):
        g.add_node("t.add", id=f"x{k}")
        g.add_node("t.add", id=f"y{k}")
        g.connect(f"x{k}", "INT", f"y{k}", "a")
        g.connect(f"y{k}", "INT", f"x{k}", "a")
        g.add_node("t.sink", id=f"s{k}")
        g.connect(f"y{k}", "INT", f"s{k}", "value")
    g.add_node("t.add", id="self")
    g.connect("self", "INT", "self", "a")  # a self-loop is a cycle too
    g.add_node("t.sink", id="sself")
    g.connect("self", "INT", "sself", "value")
    issues = validate(g, REG)
    assert sorted(i.message for i in issues) == sorted(
        [f"nodes ['x{k}', 'y{k}'] form a cycle" for k in range(3)] + ["nodes ['self'] form a cycle"])


def test_validation_with_thousands_of_errors_is_linear():
    """Many errors must not make validation quadratic (each input's "already blamed?" check once scanned
    every issue found so far: 5,000 errors took ~2 s).  Compared with a valid graph of the same shape, so
    machine speed cancels out."""

    def graph(n: int, *, broken: bool) -> Graph:
        g = Graph()
        for i in range(n):
            g.add_node("t.filter", id=f"f{i}")
            g.add_node("t.sink", id=f"s{i}")
            g.connect(f"f{i}", "IMAGE", f"s{i}", "value")
            if not broken:
                g.add_node("t.image", id=f"i{i}")
                g.connect(f"i{i}", "IMAGE", f"f{i}", "image")
        return g

    def best_of(g: Graph) -> tuple[float, list[ValidationIssue]]:
        times, issues = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            issues = validate(g, REG)
            times.append(time.perf_counter() - t0)
        return min(times), issues

    t_ok, issues_ok = best_of(graph(5_000, broken=False))
    t_bad, issues_bad = best_of(graph(5_000, broken=True))
    assert issues_ok == [] and len(issues_bad) == 5_000
    assert {(i.kind, i.input) for i in issues_bad} == {("missing_input", "image")}
    assert t_bad < 3 * t_ok + 0.05, (t_ok, t_bad)


def test_bypass_passing_an_incompatible_type_through_is_a_type_mismatch():
    """A bypassed "*"-input node (to_string) would hand an INT to a STRING input: caught before running,
    not as a TypeError half-way through the run."""
    g = Graph()
    g.add_node("t.const", {"value": 3}, id="c")
    g.add_node("primitives.to_string", id="ts", mode="bypass")
    g.connect("c", "INT", "ts", "value")
    g.add_node("primitives.case", id="up")
    g.connect("ts", "STRING", "up", "text")
    g.add_node("t.sink", id="s")
    g.connect("up", "STRING", "s", "value")
    issues = validate(g, REG)
    assert [(i.kind, i.node_id, i.input) for i in issues] == [("type_mismatch", "up", "text")]
    assert "bypassed node 'ts'" in issues[0].message and "INT" in issues[0].message
    assert "un-bypass 'ts'" in issues[0].fix
    g.set_mode("ts", "normal")
    assert validate(g, REG) == []
    g.set_mode("ts", "mute")  # a muted source: the widget input falls back to its own value
    assert validate(g, REG) == []
