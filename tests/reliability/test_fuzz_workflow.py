"""Property-based fuzzing of the workflow loader and validator.

Workflow files come from anywhere (downloads, PNGs, pasted text), so for any
input the loader must either return a graph or raise WorkflowFileError, and
validation of whatever loaded must return a list of issues — never an
uncaught exception, never a hang (each example is bounded by hypothesis'
deadline).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph import Registry, WorkflowFileError, validate
from nodegraph.workflow import dumps, from_dict, loads
from nodes import primitives
from tests.reliability.fuzz_budget import examples

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))

json_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(
    max_size=12)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                         max_size=4), max_leaves=20)


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    primitives.register(reg)
    return reg


def _check(doc: object, registry: Registry) -> None:
    try:
        graph = from_dict(doc)  # type: ignore[arg-type]
    except WorkflowFileError:
        return
    issues = validate(graph, registry, scope="all")
    assert isinstance(issues, list)
    # Whatever loaded must also save and load back.
    again = loads(dumps(graph))
    assert set(again.nodes) == set(graph.nodes)


node_strategy = st.fixed_dictionaries(
    {"type": st.sampled_from(["primitives.int", "primitives.int_math", "primitives.show", "primitives.save_text",
                              "nope.unknown", ""]) | json_values},
    optional={"values": st.dictionaries(st.sampled_from(["value", "a", "b", "op", "text", "x"]), json_values,
                                        max_size=4) | json_values,
              "mode": st.sampled_from(["normal", "bypass", "mute", "weird"]) | json_values,
              "title": json_values, "ui": json_values},
)
link_strategy = st.fixed_dictionaries({
    "from": st.lists(st.sampled_from(["1", "2", "3", "9", "INT", "STRING"]) | json_scalars, max_size=3),
    "to": st.lists(st.sampled_from(["1", "2", "3", "a", "b", "value", "text"]) | json_scalars, max_size=3),
})


# 1,000: at 400 the "links": null crash of version-0 files was found only in the long profile.
@settings(max_examples=examples(1000), deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries(
    {"format": st.just("nodegraph.workflow") | json_values, "version": st.sampled_from([0, 1, 2, -1]) | json_values},
    optional={"nodes": st.dictionaries(st.sampled_from(["1", "2", "3", "4"]), node_strategy, max_size=4) | json_values,
              "links": st.lists(link_strategy, max_size=6) | json_values,
              "groups": json_values, "meta": json_values}))
def test_structured_documents_never_crash(registry: Registry, doc: dict) -> None:
    _check(doc, registry)


@settings(max_examples=examples(300), deadline=2000)
@given(json_values)
def test_arbitrary_json_never_crashes(registry: Registry, doc: object) -> None:
    _check(doc, registry)


@settings(max_examples=examples(300), deadline=2000)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_clear_errors(text: str) -> None:
    try:
        loads(text, source="fuzz.json")
    except WorkflowFileError as exc:
        assert "fuzz.json" in str(exc)


def _mutations(doc: dict, data: st.DataObject) -> dict:
    """Delete, retype or duplicate random parts of a real workflow."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 5))):
        path: list = []
        cur: object = doc
        while isinstance(cur, (dict, list)) and cur and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(list(cur.keys()) if isinstance(cur, dict) else list(range(len(cur)))))
            path.append(key)
            cur = cur[key]
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = data.draw(st.sampled_from(["delete", "replace", "duplicate"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = data.draw(json_values)
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return doc


@pytest.mark.skipif(not WORKFLOWS, reason="no shipped workflows")
@settings(max_examples=examples(300), deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_shipped_workflows_never_crash(registry: Registry, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(WORKFLOWS))
    doc = _mutations(json.loads(path.read_text()), data)
    _check(doc, registry)
