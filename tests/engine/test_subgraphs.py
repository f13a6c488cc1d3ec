"""Subgraphs in the engine: flattening, cache keys identical to the flat graph, nesting without
recursion, validation paths, versions and pinning, overrides reaching inner nodes, the file format
and component folders."""

from __future__ import annotations

import json

import pytest
from engine_nodes import calls, make_executor, make_registry, reset_calls
from test_validation import low_recursion_limit

from nodegraph import Graph, Widget, apply_overrides, build_plan, load_workflow, save_workflow, validate
from nodegraph.errors import OverrideError, WorkflowFileError
from nodegraph.subgraph import SubgraphDef, SubgraphInput, SubgraphOutput, define, extract, flatten
from nodegraph.workflow import CURRENT_VERSION, dumps, load_subgraph_file, loads, save_subgraph_file, to_dict

REG = make_registry()


def add_chain(n: int, *, start: int = 0, prefix: str = "n") -> Graph:
    """``const(start) -> add(+1) x n -> sink`` with ids n0..n{n} and "out"."""
    g = Graph()
    g.add_node("t.const", {"value": start}, id=f"{prefix}0")
    for i in range(1, n + 1):
        g.add_node("t.add", {"b": 1}, id=f"{prefix}{i}")
        g.connect(f"{prefix}{i - 1}", "INT", f"{prefix}{i}", "a")
    g.add_node("t.sink", id="out")
    g.connect(f"{prefix}{n}", "INT", "out", "value")
    return g


def adder_def(def_id: str = "plus", *, b: int = 1) -> SubgraphDef:
    """x -> add(+b) -> add(+b) -> y, with the second addend promoted as input ``amount``."""
    inner = Graph()
    inner.add_node("t.add", {"b": b}, id="first")
    inner.add_node("t.add", id="second")
    inner.connect("first", "INT", "second", "a")
    return SubgraphDef(def_id, inner,
                       (SubgraphInput("x", "INT", (("first", "a"),)),
                        SubgraphInput("amount", "INT", (("second", "b"),), widget=Widget.INT, default=b,
                                      min=-50, max=50)),
                       (SubgraphOutput("y", "INT", ("second", "INT")),))


def keys_by_flat_id(graph: Graph, registry=REG) -> dict[str, str]:
    plan = build_plan(graph, registry, output_dir="/tmp/o")
    return plan.keys


# -- flat vs wrapped -----------------------------------------------------------------------------------------------


def test_wrapping_keeps_outputs_and_cache_keys_identical(tmp_path):
    flat = add_chain(6)
    flat_keys = keys_by_flat_id(flat)
    wrapped = add_chain(6)
    defn, inst = extract(wrapped, REG, ["n2", "n3", "n4"], "middle", promote=[("n3", "b")], instance_id="mid")
    assert [i.name for i in defn.inputs] == ["a", "b"] and [o.name for o in defn.outputs] == ["INT"]
    assert set(wrapped.nodes) == {"n0", "n1", "mid", "n5", "n6", "out"} and inst.values == {"b": 1}
    wrapped_keys = keys_by_flat_id(wrapped)
    renamed = {("mid/" + k if k in ("n2", "n3", "n4") else k): v for k, v in flat_keys.items()}
    assert wrapped_keys == renamed  # every node, every key: wrapping is invisible to the cache

    ex = make_executor(tmp_path)
    first = ex.run(flat, outputs=["out"])
    reset_calls(ex)
    second = ex.run(wrapped, outputs=["out"])
    assert calls(ex) == []  # the wrapped graph found every result of the flat run in the cache
    assert second.ui["out"] == first.ui["out"] == {"value": 6}
    assert set(second.cached()) == set(renamed)

    fresh = make_executor(tmp_path)
    assert fresh.run(wrapped).ui["out"] == {"value": 6}
    assert sorted(calls(fresh)) == sorted(renamed)


def test_instance_as_target_reports_its_outputs_by_name(tmp_path):
    g = Graph()
    define(g, adder_def())
    g.add_node("t.const", {"value": 10}, id="c")
    g.add_node("subgraph:plus", {"amount": 5}, id="p")
    g.connect("c", "INT", "p", "x")
    report = make_executor(tmp_path).run(g, outputs=["p"])
    assert report.ok and report.results["p"] == {"y": 16}  # 10 + 1 + 5


def test_three_deep_nesting_equals_the_flat_graph(tmp_path):
    g = Graph()
    define(g, adder_def("a"))
    middle = Graph()
    middle.add_node("subgraph:a", {"amount": 2}, id="inner_a")
    define(g, SubgraphDef("b", middle, (SubgraphInput("x", "INT", (("inner_a", "x"),)),
                                         SubgraphInput("amount", "INT", (("inner_a", "amount"),),
                                                       widget=Widget.INT, default=3)),
                          (SubgraphOutput("y", "INT", ("inner_a", "y")),)))
    outer = Graph()
    outer.add_node("subgraph:b", id="inner_b")
    outer.add_node("t.add", {"b": 100}, id="tail")
    outer.connect("inner_b", "y", "tail", "a")
    define(g, SubgraphDef("c", outer, (SubgraphInput("x", "INT", (("inner_b", "x"),)),),
                          (SubgraphOutput("y", "INT", ("tail", "INT")),)))
    g.add_node("t.const", {"value": 7}, id="c0")
    g.add_node("subgraph:c", id="top")
    g.add_node("t.sink", id="out")
    g.connect("c0", "INT", "top", "x")
    g.connect("top", "y", "out", "value")

    flat = Graph()
    flat.add_node("t.const", {"value": 7}, id="c0")
    flat.add_node("t.add", {"b": 1}, id="f1")
    flat.add_node("t.add", {"b": 3}, id="f2")
    flat.add_node("t.add", {"b": 100}, id="f3")
    flat.add_node("t.sink", id="out")
    for s, d, inp in (("c0", "f1", "a"), ("f1", "f2", "a"), ("f2", "f3", "a")):
        flat.connect(s, "INT", d, inp)
    flat.connect("f3", "INT", "out", "value")
    # b's promoted input "amount" (default 3) feeds a's "amount": the outer value wins over the inner instance's 2.
    keys = keys_by_flat_id(g)
    expected = keys_by_flat_id(flat)
    assert keys["top/inner_b/inner_a/first"] == expected["f1"]
    assert keys["top/inner_b/inner_a/second"] == expected["f2"]
    assert keys["top/tail"] == expected["f3"] and keys["out"] == expected["out"]
    assert make_executor(tmp_path).run(g).ui["out"] == {"value": 7 + 1 + 3 + 100}


def test_deep_nesting_plans_without_recursion():
    g = Graph()
    depth = 400
    inner = Graph()
    inner.add_node("t.add", {"b": 1}, id="x")
    define(g, SubgraphDef("d0", inner, (SubgraphInput("a", "INT", (("x", "a"),)),),
                          (SubgraphOutput("y", "INT", ("x", "INT")),)))
    for level in range(1, depth):
        body = Graph()
        body.add_node(f"subgraph:d{level - 1}", id="s")
        define(g, SubgraphDef(f"d{level}", body, (SubgraphInput("a", "INT", (("s", "a"),)),),
                              (SubgraphOutput("y", "INT", ("s", "y")),)))
    g.add_node("t.const", {"value": 0}, id="c")
    g.add_node(f"subgraph:d{depth - 1}", id="top")
    g.add_node("t.sink", id="out")
    g.connect("c", "INT", "top", "a")
    g.connect("top", "y", "out", "value")
    with low_recursion_limit():
        plan = build_plan(g, REG)
    leaf = "top" + "/s" * (depth - 1) + "/x"
    assert plan.order == ["c", leaf, "out"]


def test_subgraph_used_twice_shares_cached_work(tmp_path):
    g = Graph()
    define(g, adder_def())
    g.add_node("t.const", {"value": 1}, id="c")
    for name, amount in (("p1", 4), ("p2", 4), ("p3", 9)):
        g.add_node("subgraph:plus", {"amount": amount}, id=name)
        g.connect("c", "INT", name, "x")
        g.add_node("t.sink", id=f"out_{name}")
        g.connect(name, "y", f"out_{name}", "value")
    ex = make_executor(tmp_path)
    report = ex.run(g)
    assert report.ui["out_p1"] == report.ui["out_p2"] == {"value": 6} and report.ui["out_p3"] == {"value": 11}
    ran = calls(ex)
    # p1 and p2 are identical: one of them computes, the other shares the result in this run;
    # p3 shares the first inner node (same input, same addend) and recomputes only the second.
    assert ran.count("p1/first") + ran.count("p2/first") + ran.count("p3/first") == 1
    assert ran.count("p1/second") + ran.count("p2/second") == 1 and ran.count("p3/second") == 1


def test_changing_a_promoted_input_reruns_only_what_depends_on_it(tmp_path):
    g = Graph()
    define(g, adder_def())
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("subgraph:plus", {"amount": 4}, id="p")
    g.add_node("t.sink", id="out")
    g.connect("c", "INT", "p", "x")
    g.connect("p", "y", "out", "value")
    ex = make_executor(tmp_path)
    ex.run(g)
    reset_calls(ex)
    g.set_value("p", "amount", 20)
    report = ex.run(g)
    assert sorted(calls(ex)) == ["out", "p/second"]
    assert report.nodes["p/first"].status == "cached" and report.ui["out"] == {"value": 22}


# -- validation ---------------------------------------------------------------------------------------------------


def test_validation_errors_name_the_path_inside_subgraphs():
    g = Graph()
    inner = Graph()
    inner.add_node("t.const", {"value": 5000}, id="k")  # out of range (max 1000)
    inner.add_node("t.add", id="sum")
    inner.connect("k", "INT", "sum", "a")
    inner.add_node("t.filter", id="f")  # its image comes from interface input "img", left unlinked
    define(g, SubgraphDef("bad", inner, (SubgraphInput("x", "INT", (("sum", "b"),)),
                                          SubgraphInput("img", "IMAGE", (("f", "image"),))),
                          (SubgraphOutput("y", "INT", ("sum", "INT")),)))
    define(g, adder_def())
    g.add_node("subgraph:bad", id="outer")
    g.add_node("subgraph:plus", {"amount": 99}, id="plus")  # promoted value out of range [-50, 50]
    g.add_node("t.const", id="c")
    g.connect("c", "INT", "plus", "x")
    g.add_node("t.sink", id="s1")
    g.add_node("t.sink", id="s2")
    g.add_node("t.sink", id="s3")
    g.connect("outer", "y", "s1", "value")
    g.connect("plus", "y", "s2", "value")
    g.add_node("t.sink", id="s4")
    issues = validate(g, REG, scope="all")
    where = {(i.kind, i.node_id, i.input) for i in issues}
    assert ("out_of_range", "outer/k", "value") in where
    assert ("out_of_range", "plus", "amount") in where  # blamed on the instance, not on "plus/second"
    assert not any(i.node_id == "plus/second" for i in issues)
    missing = next(i for i in issues if i.node_id == "outer/f" and i.input == "image")
    assert "input 'img' of subgraph node 'outer'" in missing.message
    assert "node 'outer'" in missing.fix
    assert next(i for i in issues if i.node_id == "outer/k").to_dict()["path"] == "outer/k.value"
    assert ("missing_input", "s3", "value") in where


def test_unknown_definitions_versions_and_self_nesting_are_reported_not_crashes():
    g = Graph()
    body = Graph()
    body.add_node("subgraph:loop", id="again")
    g.set_subgraph(SubgraphDef("loop", body, (), (SubgraphOutput("y", "INT", ("again", "y")),)))
    g.add_node("subgraph:loop", id="l")
    g.add_node("subgraph:nowhere", id="u")
    define(g, adder_def())
    g.add_node("subgraph:plus@7", id="pinned")
    issues = validate(g, REG, scope="all")
    text = "\n".join(str(i) for i in issues)
    assert "subgraph 'loop' contains itself" in text
    assert "unknown subgraph 'nowhere'" in text
    assert "subgraph 'plus' has no version 7 (kept: [1])" in text


# -- versions ------------------------------------------------------------------------------------------------------


def test_editing_a_definition_updates_instances_and_pinned_ones_keep_their_version(tmp_path):
    g = Graph()
    define(g, adder_def(b=1))
    g.add_node("t.const", {"value": 0}, id="c")
    for nid, t in (("follow", "subgraph:plus"), ("pin", "subgraph:plus@1")):
        g.add_node(t, {"amount": 0}, id=nid)
        g.connect("c", "INT", nid, "x")
        g.add_node("t.sink", id=f"out_{nid}")
        g.connect(nid, "y", f"out_{nid}", "value")
    ex = make_executor(tmp_path)
    assert ex.run(g).ui["out_follow"] == {"value": 1}
    v2 = define(g, adder_def(b=30))
    assert v2.version == 2 and set(v2.history) == {1}
    report = ex.run(g)
    assert report.ui["out_follow"] == {"value": 30} and report.ui["out_pin"] == {"value": 1}
    assert report.nodes["pin/first"].status == "cached"
    again = loads(dumps(g))
    assert make_executor(tmp_path).run(again).ui == report.ui


# -- overrides -----------------------------------------------------------------------------------------------------


def test_overrides_reach_inner_nodes_of_one_instance_only(tmp_path):
    g = Graph()
    define(g, adder_def())
    g.add_node("t.const", {"value": 0}, id="c")
    for nid in ("a", "b"):
        g.add_node("subgraph:plus", id=nid)
        g.connect("c", "INT", nid, "x")
        g.add_node("t.sink", id=f"out_{nid}")
        g.connect(nid, "y", f"out_{nid}", "value")
    apply_overrides(g, REG, ["a/first.b=10", "a.amount=7"])
    assert g.nodes["a"].values == {"first.b": 10, "amount": 7}
    assert g.subgraphs["plus"].graph.nodes["first"].values == {"b": 1}  # the definition is untouched
    ui = make_executor(tmp_path).run(g).ui
    assert ui["out_a"] == {"value": 17} and ui["out_b"] == {"value": 2}
    with pytest.raises(OverrideError) as err:
        apply_overrides(g, REG, ["a/nope.b=1", "a/first.b=abc", "a/second.a=3", "a.x=1"])
    msg = str(err.value)
    assert "subgraph 'plus' has the inner nodes first, second" in msg
    assert "'a/first' (t.add) input 'b': cannot use 'abc'" in msg
    assert "'a/second' input 'a' is fed by a link from node 'first'" in msg
    assert "no promoted input 'x'" in msg


def test_override_into_a_nested_instance(tmp_path):
    g = Graph()
    define(g, adder_def("a"))
    body = Graph()
    body.add_node("subgraph:a", id="in")
    define(g, SubgraphDef("b", body, (SubgraphInput("x", "INT", (("in", "x"),)),),
                          (SubgraphOutput("y", "INT", ("in", "y")),)))
    g.add_node("t.const", {"value": 0}, id="c")
    g.add_node("subgraph:b", id="top")
    g.add_node("t.sink", id="out")
    g.connect("c", "INT", "top", "x")
    g.connect("top", "y", "out", "value")
    apply_overrides(g, REG, ["top/in.amount=40", "top/in/first.b=2"])
    assert g.nodes["top"].values == {"in.amount": 40, "in/first.b": 2}
    assert make_executor(tmp_path).run(g).ui["out"] == {"value": 42}


# -- modes ---------------------------------------------------------------------------------------------------------


def test_bypassed_instance_passes_input_through_and_muted_instance_mutes_inside(tmp_path):
    g = Graph()
    define(g, adder_def())
    g.add_node("t.const", {"value": 3}, id="c")
    g.add_node("subgraph:plus", {"amount": 5}, id="p", mode="bypass")
    g.add_node("t.sink", id="out")
    g.connect("c", "INT", "p", "x")
    g.connect("p", "y", "out", "value")
    ex = make_executor(tmp_path)
    assert ex.run(g).ui["out"] == {"value": 3}
    g.set_mode("p", "mute")
    g.add_node("t.opt", {"fallback": -4}, id="o")
    g.connect("p", "y", "o", "x")
    g.add_node("t.sink", id="out2")
    g.connect("o", "INT", "out2", "value")
    report = ex.run(g)
    assert report.ui["out2"] == {"value": -4} and report.nodes["out"].status == "skipped"
    assert "p/first" not in report.nodes or report.nodes["p/first"].status == "skipped"


# -- files ---------------------------------------------------------------------------------------------------------


def test_file_round_trip_and_version(tmp_path):
    g = add_chain(4)
    assert to_dict(g)["version"] == 1  # no subgraphs: still readable by older versions
    extract(g, REG, ["n1", "n2"], "pair", promote=[("n2", "b")], instance_id="pair1", name="Pair")
    path = save_workflow(g, tmp_path / "wf.json")
    doc = json.loads(path.read_text())
    assert doc["version"] == CURRENT_VERSION == 2
    assert doc["nodes"]["pair1"] == {"type": "subgraph:pair", "values": {"b": 1}}
    sub = doc["subgraphs"]["pair"]
    assert sub["name"] == "Pair" and sub["inputs"][0] == {"name": "a", "type": "INT", "to": [["n1", "a"]]}
    assert sub["inputs"][1]["widget"] == "INT" and sub["inputs"][1]["to"] == [["n2", "b"]]
    again = load_workflow(path)
    assert dumps(again) == dumps(g)
    assert keys_by_flat_id(again) == keys_by_flat_id(g)


def test_unknown_fields_of_interface_ports_survive_a_round_trip(tmp_path):
    """Unknown fields are preserved everywhere in a workflow file, the interface's ports included
    (a later version's port colour or label must not vanish when this one saves the file)."""
    g = add_chain(4)
    extract(g, REG, ["n1", "n2"], "pair", promote=[("n2", "b")], instance_id="pair1", name="Pair")
    doc = json.loads(dumps(g))
    sub = doc["subgraphs"]["pair"]
    sub["inputs"][0]["x_color"] = "#f80"
    sub["outputs"][0]["x_label"] = {"text": "sum"}
    again = json.loads(dumps(loads(json.dumps(doc))))
    assert again["subgraphs"]["pair"]["inputs"][0]["x_color"] == "#f80"
    assert again["subgraphs"]["pair"]["outputs"][0]["x_label"] == {"text": "sum"}
    assert again == doc


def test_version_1_files_load_unchanged(tmp_path):
    v1 = {"format": "nodegraph.workflow", "version": 1, "nodes": {"a": {"type": "t.const", "values": {"value": 2}},
                                                                   "s": {"type": "t.sink", "values": {}}},
          "links": [{"from": ["a", "INT"], "to": ["s", "value"]}]}
    g = loads(json.dumps(v1))
    assert to_dict(g) == v1 and not g.subgraphs


@pytest.mark.parametrize(("subgraphs", "message"), [
    ([], "'subgraphs' must be an object"),
    ({"s": {"inputs": [{"name": "x"}]}}, "subgraph 's': input #0 must be an object with 'name' and 'type'"),
    ({"s": {"inputs": [{"name": "x", "type": "INT", "to": [["ghost", "a"]]}]}},
     "subgraph 's': input 'x' feeds node 'ghost', which is not in the subgraph"),
    ({"s": {"outputs": [{"name": "y", "type": "INT", "from": "n"}]}}, "'from' must be [node_id, output]"),
    ({"s": {"inputs": [{"name": "x", "type": "INT", "widget": "INT", "default": "no"}]}}, "default 'no' is not"),
    ({"s": {"nodes": {"a": {}}}}, "subgraph 's': node 'a' has no 'type'"),
    ({"s": {"version": 0}}, "'version' must be a positive integer"),
])
def test_malformed_subgraph_tables_give_clear_errors(subgraphs, message):
    doc = {"format": "nodegraph.workflow", "version": 2, "nodes": {}, "links": [], "subgraphs": subgraphs}
    with pytest.raises(WorkflowFileError) as err:
        loads(json.dumps(doc))
    assert message in str(err.value)


def test_component_folder_is_listed_and_usable(tmp_path):
    src = Graph()
    define(src, adder_def("inner_plus"))
    body = Graph()
    body.add_node("subgraph:inner_plus", {"amount": 2}, id="p")
    define(src, SubgraphDef("twice", body, (SubgraphInput("x", "INT", (("p", "x"),)),),
                            (SubgraphOutput("y", "INT", ("p", "y")),), name="Add twice", category="math/components"))
    folder = tmp_path / "subgraphs"
    folder.mkdir()
    save_subgraph_file(src, "twice", folder / "twice.json")
    (folder / "broken.json").write_text("{nope")
    assert [d.id for d in load_subgraph_file(folder / "twice.json")] == ["twice", "inner_plus"]
    reg = make_registry()
    assert reg.load_subgraph_folder(folder) == 1 and list(reg.subgraph_errors) == [str(folder / "broken.json")]
    entry = next(e for e in reg.catalogue() if e["type"] == "subgraph:twice")
    assert entry["display_name"] == "Add twice" and [i["name"] for i in entry["inputs"]] == ["x"]
    assert "subgraph:twice" in [s.type_id for s in reg.categories()["math/components"]]
    g = Graph()  # a workflow that uses the component without defining it
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("subgraph:twice", id="t")
    g.add_node("t.sink", id="out")
    g.connect("c", "INT", "t", "x")
    g.connect("t", "y", "out", "value")
    assert make_executor(tmp_path, reg).run(g).ui["out"] == {"value": 4}
    assert validate(g, REG)[0].message == "unknown subgraph 'twice'"


def test_flatten_is_linear_in_size_and_keeps_links():
    g = add_chain(30)
    for k in range(3):
        extract(g, REG, [f"n{i}" for i in range(1 + 10 * k, 11 + 10 * k)], f"block{k}", instance_id=f"b{k}")
    flat = flatten(g, REG)
    assert len(flat.graph) == 32 and not flat.issues
    assert flat.graph.link_into("b1/n11", "a").src == "b0/n10"


# -- command line ---------------------------------------------------------------------------------------------------


def _cli_workflow(folder, *, bad_inner: bool = False):
    """A primitives-only workflow: num -> subgraph "halve" (floor_divide by a promoted divisor) -> show."""
    g = Graph()
    inner = Graph()
    inner.add_node("primitives.int_math", {"op": "floor_divide", "b": "two" if bad_inner else 2}, id="div")
    define(g, SubgraphDef("halve", inner, (SubgraphInput("x", "INT", (("div", "a"),)),),
                          (SubgraphOutput("y", "INT", ("div", "INT")),)))
    g.add_node("primitives.int", {"value": 12}, id="num")
    g.add_node("subgraph:halve", id="h")
    g.add_node("primitives.show", id="show")
    g.connect("num", "INT", "h", "x")
    g.connect("h", "y", "show", "value")
    return save_workflow(g, folder / "wf.json")


def test_cli_validate_and_run_report_inner_problems_with_their_path_and_set_reaches_inside(tmp_path, capsys):
    from nodegraph.cli import main

    bad = _cli_workflow(tmp_path, bad_inner=True)
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "node 'h/div' (primitives.int_math) input 'b': value 'two' is invalid" in err
    assert main(["run", str(bad), "--quiet", "-o", str(tmp_path / "out")]) == 2
    assert "node 'h/div'" in capsys.readouterr().err
    good = _cli_workflow(tmp_path)
    assert main(["run", str(good), "--quiet", "-o", str(tmp_path / "out"), "--set", "h/div.b=4"]) == 0
    assert "show: 3" in capsys.readouterr().out  # 12 // 4
    assert main(["run", str(good), "--quiet", "-o", str(tmp_path / "out"), "--set", "h/nope.b=4"]) == 2
    assert "subgraph 'halve' has the inner nodes div" in capsys.readouterr().err


# -- malformed input never crashes ---------------------------------------------------------------------------------


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON document."""
    out = [(prefix, value)]
    stack = [(prefix, value)]
    while stack:
        p, v = stack.pop()
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, child in items:
            out.append(((*p, k), child))
            stack.append(((*p, k), child))
    return out


def _valid_doc() -> dict:
    g = add_chain(4)
    extract(g, REG, ["n1", "n2"], "pair", promote=[("n2", "b")], instance_id="p")
    define(g, adder_def())
    g.add_node("subgraph:plus@1", {"amount": 3, "first.b": 2}, id="q")
    return json.loads(dumps(g))


def test_mutated_subgraph_documents_load_or_fail_cleanly():
    """Every place of a valid document with subgraphs, replaced by every kind of wrong JSON value:
    loading gives a graph (that validates to a list of issues and saves back) or a WorkflowFileError."""
    base = _valid_doc()
    targets = [p for p, _ in _paths(base) if p and p[0] in ("subgraphs", "nodes")]
    junk = [None, True, -1, 2.5, "", "x/y", [], [1, "a"], {}, {"a": 1}]
    assert len(targets) > 60
    for path in targets:
        for value in junk:
            doc = json.loads(json.dumps(base))
            holder = doc
            for k in path[:-1]:
                holder = holder[k]
            holder[path[-1]] = value
            try:
                g = loads(json.dumps(doc))
            except WorkflowFileError:
                continue
            assert isinstance(validate(g, REG, scope="all"), list), (path, value)
            assert set(loads(dumps(g)).nodes) == set(g.nodes), (path, value)


def test_a_graph_copy_owns_its_definitions():
    g = Graph()
    define(g, adder_def())
    snapshot = g.copy()
    g.subgraphs["plus"].graph.set_value("first", "b", 99)  # an editor editing inside the definition
    assert snapshot.subgraphs["plus"].graph.nodes["first"].values == {"b": 1}


def test_an_outer_instance_value_wins_over_values_set_inside_the_definition(tmp_path):
    g = Graph()
    define(g, adder_def("a"))
    body = Graph()
    body.add_node("subgraph:a", {"first.b": 5}, id="in")  # set inside the definition of "b" (shared)
    define(g, SubgraphDef("b", body, (SubgraphInput("x", "INT", (("in", "x"),)),),
                          (SubgraphOutput("y", "INT", ("in", "y")),)))
    g.add_node("t.const", {"value": 0}, id="c")
    for nid, values in (("one", {}), ("two", {"in/first.b": 50})):  # "two" overrides it for itself only
        g.add_node("subgraph:b", values, id=nid)
        g.connect("c", "INT", nid, "x")
        g.add_node("t.sink", id=f"out_{nid}")
        g.connect(nid, "y", f"out_{nid}", "value")
    ui = make_executor(tmp_path).run(g).ui
    assert ui["out_one"] == {"value": 5 + 1} and ui["out_two"] == {"value": 50 + 1}


def test_component_files_are_read_as_strictly_as_workflows(tmp_path, monkeypatch):
    """Component files are downloaded and shared like workflows: a repeated key (which shows one
    value to a reviewer and runs another) and an oversized file are refused the same way."""
    import nodegraph.jsontext

    src = Graph()
    define(src, adder_def("plus"))
    path = save_subgraph_file(src, "plus", tmp_path / "plus.json") or tmp_path / "plus.json"
    text = path.read_text()
    doctored = text.replace('"name": "', '"name": "shown", "name": "', 1)
    assert doctored != text
    path.write_text(doctored)
    with pytest.raises(WorkflowFileError, match="appears twice"):
        load_subgraph_file(path)
    path.write_text(text)
    assert [d.id for d in load_subgraph_file(path)] == ["plus"]
    monkeypatch.setattr(nodegraph.jsontext.check_size, "__defaults__", (len(text) - 1,))
    with pytest.raises(WorkflowFileError, match="MiB a workflow file may have"):
        load_subgraph_file(path)
