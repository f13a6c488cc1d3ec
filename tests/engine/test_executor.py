"""The executor: plans only what outputs need, topological order, bypass/mute, events, errors,
cancellation (between nodes, inside a node, from another thread)."""

from __future__ import annotations

import json
import random
import threading

import pytest
from engine_nodes import calls, chain, diamond, make_executor, make_registry, reset_calls

from nodegraph import (
    Cancelled,
    CancelToken,
    Event,
    Graph,
    In,
    NodeError,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    Out,
    RunFinished,
    RunStarted,
    WorkflowInvalid,
    node,
)


def summary(events: list[Event]) -> list[tuple]:
    """Events as comparable tuples (timings and run ids left out)."""
    out = []
    for e in events:
        if isinstance(e, RunStarted):
            out.append(("run_started", e.nodes))
        elif isinstance(e, NodeStarted):
            out.append(("node_started", e.node_id, e.node_type))
        elif isinstance(e, NodeProgress):
            out.append(("node_progress", e.node_id, e.step, e.total))
        elif isinstance(e, NodeFinished):
            out.append(("node_finished", e.node_id, e.status))
        elif isinstance(e, NodeError):
            out.append(("node_error", e.node_id, e.input))
        elif isinstance(e, RunFinished):
            out.append(("run_finished", e.status))
    return out


# -- planning ------------------------------------------------------------------------------------------------


def test_runs_only_what_the_requested_outputs_need(tmp_path):
    ex = make_executor(tmp_path)
    g = diamond()
    g.add_node("nope.broken", id="unrelated")  # not needed by s1: must not block the run
    report = ex.run(g, outputs=["s1"])
    assert report.ok and report.ui == {"s1": {"value": 3}}
    assert sorted(calls(ex)) == ["a", "c1", "c2", "s1"]
    assert set(report.nodes) == {"a", "c1", "c2", "s1"}
    reset_calls(ex)
    with pytest.raises(WorkflowInvalid):  # default targets = every output node -> needs nothing broken
        g.add_node("t.sink", id="s3")
        g.connect("unrelated", "X", "s3", "value")
        ex.run(g)
    assert calls(ex) == []  # validation failed before any work
    g.remove_node("s3")
    g.set_mode("unrelated", "mute")  # an unknown type blocks "run everything" unless muted
    report = ex.run(g)
    assert report.ok and report.ui == {"s1": {"value": 3}, "s2": {"value": 12}}
    assert sorted(calls(ex)) == ["b", "s2"]  # the rest came from the cache


def test_random_dag_runs_in_topological_order_with_correct_values(tmp_path):
    rng = random.Random(1234)
    n = 300
    parents: dict[int, tuple[int, int]] = {}
    for i in range(8, n):
        parents[i] = (rng.randrange(i), rng.randrange(i))
    g = Graph()
    for i in rng.sample(range(n), n):  # insertion order unrelated to the dependency order
        if i < 8:
            g.add_node("t.const", {"value": i + 1}, id=f"v{i}")
        else:
            g.add_node("t.add", id=f"v{i}")
    for i, (a, b) in parents.items():
        g.connect(f"v{a}", "INT", f"v{i}", "a")
        g.connect(f"v{b}", "INT", f"v{i}", "b")
    g.add_node("t.sink", id="out")
    g.connect(f"v{n - 1}", "INT", "out", "value")

    value: dict[int, int] = {}
    for i in range(n):
        value[i] = i + 1 if i < 8 else value[parents[i][0]] + value[parents[i][1]]
    ancestors, stack = set(), [n - 1]
    while stack:
        i = stack.pop()
        if i not in ancestors:
            ancestors.add(i)
            stack.extend(parents.get(i, ()))

    ex = make_executor(tmp_path)
    report = ex.run(g)
    assert report.ok and report.ui["out"]["value"] == value[n - 1]
    order = calls(ex)
    assert set(order) == {f"v{i}" for i in ancestors} | {"out"}  # only what the output needs
    pos = {nid: k for k, nid in enumerate(order)}
    for i in ancestors:
        for p in parents.get(i, ()):
            assert pos[f"v{p}"] < pos[f"v{i}"]
    assert pos["out"] == len(order) - 1


def test_multiple_outputs_by_name_and_return_forms(tmp_path):
    g = Graph()
    g.add_node("t.two", {"value": 7}, id="t")
    g.add_node("t.sink", id="s2")
    g.add_node("t.sink", id="s3")
    g.connect("t", "double", "s2", "value")
    g.connect("t", "triple", "s3", "value")
    report = make_executor(tmp_path).run(g)
    assert report.ui == {"s2": {"value": 14}, "s3": {"value": 21}}


def test_wrong_number_of_returned_outputs_is_a_node_error(tmp_path):
    @node("t.bad_return", outputs=[Out("a", "INT"), Out("b", "INT")])
    def bad(ctx):
        return 1, 2, 3

    reg = make_registry()
    reg.add(bad)
    g = Graph()
    g.add_node("t.bad_return", id="x")
    g.add_node("t.sink", id="s")
    g.connect("x", "a", "s", "value")
    report = make_executor(tmp_path, reg).run(g)
    assert report.status == "error" and report.error.node_id == "x"
    assert "expected 2 output(s) ['a', 'b']" in report.error.message


# -- bypass and mute -------------------------------------------------------------------------------------------


def test_bypass_passes_the_same_typed_input_through(tmp_path):
    g = Graph()
    g.add_node("t.image", {"size": 5}, id="img")
    g.add_node("t.image", {"size": 9}, id="img_for_mask")
    g.add_node("t.to_mask", id="m")
    g.connect("img_for_mask", "IMAGE", "m", "image")
    g.add_node("t.filter", {"strength": 0.1}, id="f1", mode="bypass")
    g.connect("m", "MASK", "f1", "mask")  # declared first, but not the output's type
    g.connect("img", "IMAGE", "f1", "image")
    g.add_node("t.filter", {"strength": 0.2}, id="f2", mode="bypass")  # two bypassed in a row
    g.connect("f1", "IMAGE", "f2", "image")
    g.add_node("t.filter", {"strength": 0.3}, id="f3")
    g.connect("f2", "IMAGE", "f3", "image")
    g.add_node("t.sink", id="s")
    g.connect("f3", "IMAGE", "s", "value")
    ex = make_executor(tmp_path)
    report = ex.run(g)
    assert report.ok and report.ui["s"]["value"] == ("filtered", ("image", 5), 0.3)
    assert sorted(calls(ex)) == ["f3", "img", "s"]  # bypassed nodes and what only they needed never ran
    assert "f1" not in report.nodes and "m" not in report.nodes
    # un-bypassing re-runs the affected part; re-bypassing is a cache hit
    g.set_mode("f2", "normal")
    reset_calls(ex)
    report = ex.run(g)
    assert report.ui["s"]["value"] == ("filtered", ("filtered", ("image", 5), 0.2), 0.3)
    assert sorted(calls(ex)) == ["f2", "f3", "s"]
    g.set_mode("f2", "bypass")
    reset_calls(ex)
    assert ex.run(g).ok and calls(ex) == []


def test_bypass_without_matching_input_drops_an_optional_input(tmp_path):
    g = Graph()
    g.add_node("t.image", id="i1")
    g.add_node("t.image", {"size": 3}, id="i2")
    g.add_node("t.filter", id="m", mode="bypass")  # IMAGE output, bypassed ...
    g.connect("i2", "IMAGE", "m", "image")
    g.add_node("t.to_mask", id="tm", mode="bypass")  # MASK output with only an IMAGE input: nothing to pass
    g.connect("m", "IMAGE", "tm", "image")
    g.add_node("t.filter", id="f")
    g.connect("i1", "IMAGE", "f", "image")
    g.connect("tm", "MASK", "f", "mask")  # optional: dropped
    g.add_node("t.sink", id="s")
    g.connect("f", "IMAGE", "s", "value")
    report = make_executor(tmp_path).run(g)
    assert report.ok and report.ui["s"]["value"] == ("filtered", ("image", 2), 0.5)


def test_bypassed_int_node_passes_its_int_input(tmp_path):
    g = chain(4)  # n0 -> n1(+1) -> n2(+1) -> nout
    g.set_mode("n1", "bypass")
    ex = make_executor(tmp_path)
    assert ex.run(g).ui["nout"]["value"] == 1
    assert sorted(calls(ex)) == ["n0", "n2", "nout"]


def test_mute_skips_dependents_and_drops_optional_inputs(tmp_path):
    g = Graph()
    g.add_node("t.const", {"value": 4}, id="c")
    g.add_node("t.add", {"b": 1}, id="muted", mode="mute")
    g.connect("c", "INT", "muted", "a")
    g.add_node("t.add", {"b": 1}, id="after")  # "a" is a widget input: falls back to its own value
    g.connect("muted", "INT", "after", "a")
    g.set_value("after", "a", 10)
    g.add_node("t.opt", id="o")  # optional link-only input from a muted node: dropped
    g.connect("muted", "INT", "o", "x")
    g.add_node("t.sink", id="needs_muted")  # required link-only input from a muted node: skipped
    g.connect("muted", "INT", "needs_muted", "value")
    g.add_node("t.steps", id="st")  # required, and downstream of a skipped node via a required input
    g.connect("muted", "INT", "st", "x")
    g.add_node("t.sink", id="after_st")
    g.connect("st", "INT", "after_st", "value")
    g.add_node("t.sink", id="s_after")
    g.connect("after", "INT", "s_after", "value")
    g.add_node("t.sink", id="s_opt")
    g.connect("o", "INT", "s_opt", "value")
    g.add_node("t.sink", id="muted_out", mode="mute")
    g.connect("c", "INT", "muted_out", "value")
    events: list[Event] = []
    ex = make_executor(tmp_path)
    report = ex.run(g, on_event=events.append)
    assert report.ok
    assert report.ui == {"s_after": {"value": 11}, "s_opt": {"value": -1}}
    assert sorted(calls(ex)) == ["after", "o", "s_after", "s_opt"]
    for nid in ("needs_muted", "st", "after_st"):
        assert report.nodes[nid].status == "skipped"
        assert "muted" in report.nodes[nid].reason
    assert ("node_finished", "needs_muted", "skipped") in summary(events)
    assert "muted" not in report.nodes and "muted_out" not in report.nodes  # muted: nothing runs
    # an explicitly requested muted output is reported as skipped, with a readable reason
    report = ex.run(g, outputs=["muted_out"])
    assert report.nodes["muted_out"].status == "skipped" and report.nodes["muted_out"].reason == "node is muted"
    g.set_mode("muted_out", "bypass")
    assert ex.run(g, outputs=["muted_out"]).nodes["muted_out"].reason == "node is bypassed"


# -- events and errors ---------------------------------------------------------------------------------------


def _steps_graph(steps: int = 3) -> Graph:
    g = Graph()
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("t.steps", {"steps": steps}, id="st")
    g.connect("c", "INT", "st", "x")
    g.add_node("t.sink", id="s")
    g.connect("st", "INT", "s", "value")
    return g


def test_events_in_order_for_executed_then_cached_runs(tmp_path):
    ex = make_executor(tmp_path)
    subscribed: list[Event] = []
    ex.subscribe(subscribed.append)
    events: list[Event] = []
    report = ex.run(_steps_graph(), on_event=events.append)
    assert summary(events) == [
        ("run_started", ("c", "st", "s")),
        ("node_started", "c", "t.const"), ("node_finished", "c", "executed"),
        ("node_started", "st", "t.steps"),
        ("node_progress", "st", 1, 3), ("node_progress", "st", 2, 3), ("node_progress", "st", 3, 3),
        ("node_finished", "st", "executed"),
        ("node_started", "s", "t.sink"), ("node_finished", "s", "executed"),
        ("run_finished", "ok"),
    ]
    assert subscribed == events  # executor-wide subscribers see the same stream
    assert len({e.run_id for e in events}) == 1 and events[0].run_id == report.run_id
    previews = [e.preview for e in events if isinstance(e, NodeProgress)]
    assert [int(p[0, 0, 0]) for p in previews] == [1, 2, 3] and previews[0].shape == (2, 2, 3)
    finished = [e for e in events if isinstance(e, NodeFinished)]
    assert all(e.seconds >= 0 for e in finished) and finished[-1].ui == {"value": 4}
    assert isinstance(events[-1], RunFinished) and events[-1].seconds >= 0
    for e in events:  # every event serialises (previews are left out)
        d = json.loads(json.dumps(e.to_dict()))
        assert d["kind"] == e.kind and "preview" not in d

    events.clear()
    ex.run(_steps_graph(), on_event=events.append)
    assert summary(events) == [
        ("run_started", ("c", "st", "s")),
        ("node_finished", "c", "cached"), ("node_finished", "st", "cached"), ("node_finished", "s", "cached"),
        ("run_finished", "ok"),
    ]


def test_node_error_names_node_input_and_keeps_the_traceback_and_caches_nothing(tmp_path):
    g = Graph()
    g.add_node("t.const", {"value": 2}, id="c")
    g.add_node("t.fail", {"value": 3}, id="f")
    g.connect("c", "INT", "f", "x")
    g.add_node("t.sink", id="s")
    g.connect("f", "INT", "s", "value")
    ex = make_executor(tmp_path, settings={"fail": True})
    events: list[Event] = []
    report = ex.run(g, on_event=events.append)
    assert summary(events) == [
        ("run_started", ("c", "f", "s")),
        ("node_started", "c", "t.const"), ("node_finished", "c", "executed"),
        ("node_started", "f", "t.fail"), ("node_error", "f", "value"),
        ("run_finished", "error"),
    ]
    err = events[-2]
    assert err.message == "told to fail -> clear the fail flag"
    assert "NodeInputError" in err.traceback and 'raise NodeInputError("value"' in err.traceback
    assert report.status == "error" and not report.ok
    assert (report.error.node_id, report.error.node_type, report.error.input) == ("f", "t.fail", "value")
    assert report.nodes["f"].status == "error" and report.nodes["s"].status == "not_run"
    assert report.nodes["c"].status == "executed"
    with pytest.raises(RuntimeError, match=r"node 'f' \(t.fail\), input 'value': told to fail"):
        report.raise_for_status()
    d = json.loads(json.dumps(report.to_dict()))
    assert d["status"] == "error" and d["error"]["input"] == "value" and "Traceback" in d["error"]["traceback"]

    plan = ex.plan(g)
    assert plan.keys["c"] in ex.cache and plan.keys["f"] not in ex.cache  # the failure cached nothing
    ex.settings["fail"] = False
    reset_calls(ex)
    report = ex.run(g)
    assert report.ok and report.ui["s"]["value"] == 5
    assert calls(ex) == ["f", "s"] and report.nodes["c"].status == "cached"


def test_unexpected_exception_is_reported_with_its_type(tmp_path):
    g = chain(3)
    g.add_node("t.boom", id="b")
    g.connect("n1", "INT", "b", "x")
    g.add_node("t.sink", id="sb")
    g.connect("b", "INT", "sb", "value")
    report = make_executor(tmp_path).run(g, outputs=["sb"])
    assert report.error.message == "RuntimeError: kaboom from inside the node"
    assert report.error.input is None and "engine_nodes.py" in report.error.traceback


def test_out_of_memory_releases_the_cache_and_says_so(tmp_path):
    @node("t.oom", inputs=[In("x", "INT")], outputs=[Out("y", "INT")])
    def oom(ctx, x):
        raise MemoryError("cannot allocate 80 GiB")

    reg = make_registry()
    reg.add(oom)
    ex = make_executor(tmp_path, reg)
    assert ex.run(chain(5)).ok and len(ex.cache) == 5
    g = chain(3)
    g.add_node("t.oom", id="o")
    g.connect("n1", "INT", "o", "x")
    g.add_node("t.sink", id="so")
    g.connect("o", "y", "so", "value")
    report = ex.run(g, outputs=["so"])
    assert report.status == "error" and "out of memory" in report.error.message
    assert "lower the resolution" in report.error.message
    assert len(ex.cache) == 0


# -- cancellation ----------------------------------------------------------------------------------------------


def test_cancel_between_nodes_then_next_run_completes_from_cache(tmp_path):
    g = chain(5)  # n0 n1 n2 n3 nout
    ex = make_executor(tmp_path)
    token = CancelToken()
    events: list[Event] = []

    def on_event(e: Event) -> None:
        events.append(e)
        if isinstance(e, NodeFinished) and e.node_id == "n1":
            token.cancel()

    report = ex.run(g, on_event=on_event, cancel=token)
    assert report.status == "cancelled" and report.error is None
    assert calls(ex) == ["n0", "n1"]
    assert summary(events)[-1] == ("run_finished", "cancelled")
    assert [report.nodes[n].status for n in ("n0", "n1", "n2", "nout")] == ["executed", "executed", "not_run",
                                                                            "not_run"]
    with pytest.raises(Cancelled):
        report.raise_for_status()
    reset_calls(ex)
    report = ex.run(g)  # a fresh token: the cache is consistent and reused
    assert report.ok and report.ui["nout"]["value"] == 3
    assert calls(ex) == ["n2", "n3", "nout"] and report.cached() == ["n0", "n1"]


def test_cancel_inside_a_node_caches_nothing_from_it(tmp_path):
    ex = make_executor(tmp_path)
    token = CancelToken()
    events: list[Event] = []

    def on_event(e: Event) -> None:
        events.append(e)
        if isinstance(e, NodeProgress) and e.step == 3:
            token.cancel()  # e.g. the GUI's stop button, pressed mid-sampling

    g = _steps_graph(steps=10)
    report = ex.run(g, on_event=on_event, cancel=token)
    assert report.status == "cancelled"
    steps_seen = [e.step for e in events if isinstance(e, NodeProgress)]
    assert steps_seen == [1, 2, 3]  # stopped at the step that saw the cancel
    assert not any(isinstance(e, NodeFinished) and e.node_id == "st" for e in events)
    plan = ex.plan(g)
    assert plan.keys["c"] in ex.cache and plan.keys["st"] not in ex.cache and plan.keys["s"] not in ex.cache
    # the same token, reset, runs to completion; only the cancelled node and its dependents run
    token.reset()
    reset_calls(ex)
    events.clear()
    report = ex.run(g, cancel=token, on_event=events.append)
    assert report.ok and report.ui["s"]["value"] == 11
    assert calls(ex) == ["st", "s"]
    assert [e.step for e in events if isinstance(e, NodeProgress)] == list(range(1, 11))


def test_already_cancelled_token_runs_nothing(tmp_path):
    ex = make_executor(tmp_path)
    token = CancelToken()
    token.cancel()
    report = ex.run(chain(3), cancel=token)
    assert report.status == "cancelled" and calls(ex) == [] and len(ex.cache) == 0


def test_cancel_from_another_thread_stops_a_long_node(tmp_path):
    started = threading.Event()
    ex = make_executor(tmp_path, settings={"started": started})
    g = Graph()
    g.add_node("t.const", id="c")
    g.add_node("t.wait", {"max_steps": 2000}, id="w")  # ~10 s if never cancelled
    g.connect("c", "INT", "w", "x")
    g.add_node("t.sink", id="s")
    g.connect("w", "INT", "s", "value")
    token = CancelToken()
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=ex.run(g, cancel=token)))
    worker.start()
    assert started.wait(10)
    token.cancel()
    worker.join(5)
    assert not worker.is_alive()
    assert result["report"].status == "cancelled"
    assert ex.plan(g).keys["w"] not in ex.cache


def test_concurrent_runs_on_one_executor_are_serialised_and_both_succeed(tmp_path):
    ex = make_executor(tmp_path)
    reports = []
    threads = [threading.Thread(target=lambda k=k: reports.append(ex.run(chain(300, prefix=f"p{k}_"))))
               for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reports) == 3 and all(r.ok for r in reports)
    assert sorted(len(r.executed()) for r in reports) == [0, 0, 300]  # same content: computed once
    assert [list(r.ui.values()) for r in reports] == [[{"value": 298}]] * 3


def test_event_dicts_are_json_even_with_arrays_in_display_data(tmp_path):
    ex = make_executor(tmp_path)
    g = Graph()
    g.add_node("t.big", {"kbytes": 1}, id="b")
    g.add_node("t.sink", id="s")  # its ui holds the array itself
    g.connect("b", "array", "s", "value")
    events: list[Event] = []
    ex.run(g, on_event=events.append)
    finished = [e for e in events if isinstance(e, NodeFinished) and e.node_id == "s"][0]
    assert finished.ui["value"].nbytes == 1000
    d = json.loads(json.dumps(finished.to_dict()))
    assert d["ui"] == {} and d["kind"] == "node_finished" and d["node_id"] == "s"
    started = json.loads(json.dumps(events[0].to_dict()))
    assert started == {"run_id": events[0].run_id, "nodes": ["b", "s"], "kind": "run_started"}


def test_run_uses_a_snapshot_so_the_editor_can_keep_editing(tmp_path):
    started = threading.Event()
    ex = make_executor(tmp_path, settings={"started": started})
    g = Graph()
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("t.wait", {"max_steps": 20}, id="w")
    g.connect("c", "INT", "w", "x")
    g.add_node("t.add", {"b": 1}, id="after")
    g.connect("w", "INT", "after", "a")
    g.add_node("t.sink", id="s")
    g.connect("after", "INT", "s", "value")
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=ex.run(g)))
    worker.start()
    assert started.wait(10)
    g.set_value("after", "b", 100)  # edits while the run is in progress ...
    g.remove_node("c")
    worker.join(10)
    assert result["report"].ok and result["report"].ui["s"]["value"] == 2  # ... do not leak into it
