"""The torch-free primitive pack: each node computes what its name says, and bad inputs blame an input."""

from __future__ import annotations

import pytest
from engine_nodes import make_executor

from nodegraph import Graph


def run_one(tmp_path, type_id: str, values: dict, out: str):
    g = Graph()
    g.add_node(type_id, values, id="n")
    g.add_node("primitives.show", id="show")
    g.connect("n", out, "show", "value")
    return make_executor(tmp_path).run(g)


@pytest.mark.parametrize(
    ("type_id", "values", "out", "text"),
    [
        ("primitives.int", {"value": -3}, "INT", "-3"),
        ("primitives.float", {"value": 2.5}, "FLOAT", "2.5"),
        ("primitives.string", {"value": "hi"}, "STRING", "hi"),
        ("primitives.bool", {"value": True}, "BOOLEAN", "True"),
        ("primitives.seed", {"seed": 2**63}, "seed", str(2**63)),
        ("primitives.int_math", {"a": 7, "b": 2, "op": "floor_divide"}, "INT", "3"),
        ("primitives.int_math", {"a": 7, "b": 2, "op": "modulo"}, "INT", "1"),
        ("primitives.int_math", {"a": 2, "b": 10, "op": "power"}, "INT", "1024"),
        ("primitives.float_math", {"a": 1, "b": 4, "op": "divide"}, "FLOAT", "0.25"),
        ("primitives.float_math", {"a": 3, "b": 4, "op": "max"}, "FLOAT", "4.0"),
        ("primitives.int_to_float", {"value": 3}, "FLOAT", "3.0"),
        ("primitives.float_to_int", {"value": 2.5, "rounding": "ceil"}, "INT", "3"),
        ("primitives.float_to_int", {"value": -2.5, "rounding": "truncate"}, "INT", "-2"),
        ("primitives.compare", {"a": 1, "b": 2, "op": ">="}, "BOOLEAN", "False"),
        ("primitives.concat", {"a": "a cat", "b": "", "separator": ", "}, "STRING", "a cat"),
        ("primitives.concat", {"a": "a cat", "b": "oil", "separator": ", "}, "STRING", "a cat, oil"),
        ("primitives.replace", {"text": "a-b-c", "find": "-", "replace": "+"}, "STRING", "a+b+c"),
        ("primitives.case", {"text": "a Cat", "case": "title"}, "STRING", "A Cat"),
    ],
)
def test_primitive_results(tmp_path, type_id, values, out, text):
    report = run_one(tmp_path, type_id, values, out)
    assert report.ok, report.error
    assert report.ui["show"] == {"text": text}


@pytest.mark.parametrize(
    ("type_id", "values", "out", "input", "needle"),
    [
        ("primitives.int_math", {"a": 1, "b": 0, "op": "modulo"}, "INT", "b", "modulo by zero"),
        ("primitives.int_math", {"a": 2, "b": -1, "op": "power"}, "INT", "b", "not an integer"),
        ("primitives.float_math", {"a": -8, "b": 0.5, "op": "power"}, "FLOAT", "b", "not a finite real number"),
        ("primitives.float_math", {"a": 10, "b": 1000, "op": "power"}, "FLOAT", "b", "not a finite real number"),
        ("primitives.float_math", {"a": 1e308, "b": 10, "op": "multiply"}, "FLOAT", "b", "not a finite real"),
        ("primitives.random_int", {"low": 5, "high": 1}, "INT", "high", "below low"),
    ],
)
def test_bad_inputs_blame_the_input(tmp_path, type_id, values, out, input, needle):
    report = run_one(tmp_path, type_id, values, out)
    assert report.status == "error" and report.error.input == input and needle in report.error.message


def test_random_int_is_in_range_and_never_cached(tmp_path):
    ex = make_executor(tmp_path)
    g = Graph()
    g.add_node("primitives.random_int", {"low": 1, "high": 6}, id="r")
    g.add_node("primitives.show", id="show")
    g.connect("r", "INT", "show", "value")
    values = set()
    for _ in range(30):
        report = ex.run(g)
        assert report.nodes["r"].status == "executed"
        values.add(int(report.ui["show"]["text"]))
    assert values <= set(range(1, 7)) and len(values) > 1


def test_reroute_and_to_string_pass_anything(tmp_path):
    g = Graph()
    g.add_node("primitives.float", {"value": 0.5}, id="f")
    g.add_node("primitives.reroute", id="r")
    g.connect("f", "FLOAT", "r", "input")
    g.add_node("primitives.float_math", {"b": 2, "op": "multiply"}, id="m")
    g.connect("r", "output", "m", "a")
    g.add_node("primitives.to_string", id="s")
    g.connect("m", "FLOAT", "s", "value")
    g.add_node("primitives.show", id="show")
    g.connect("s", "STRING", "show", "value")
    assert make_executor(tmp_path).run(g).ui["show"] == {"text": "1.0"}
