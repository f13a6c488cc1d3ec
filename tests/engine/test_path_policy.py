"""``PathPolicy``: inputs declared ``path=`` are confined at validation, generically (no node type named),
before any fingerprint looks at the disk; without a policy nothing changes."""

from __future__ import annotations

import pytest

from nodegraph import Graph, NodeResult, Out, Registry, String, node
from nodegraph.errors import SpecError, WorkflowInvalid
from nodegraph.paths import PATH_POLICY, PathPolicy
from nodegraph.plan import build_plan
from nodegraph.spec import PATH_READ, PATH_WRITE, Input, Int, NodeSpec, Widget, check_spec

LOOKED_AT: list[str] = []


def _fingerprint(values: dict) -> str:
    LOOKED_AT.append(values.get("src", "<linked>"))  # a real loader would stat() the file here
    return LOOKED_AT[-1]


@node("test_paths.copy", inputs=[String("src", "", path=PATH_READ), String("dst", "out", path=PATH_WRITE),
                                 String("note", "")], outputs=[], output_node=True, fingerprint=_fingerprint)
def copy_file(ctx: object, src: str, dst: str, note: str) -> NodeResult:
    return NodeResult()


@node("test_paths.text", inputs=[String("value", "x")], outputs=[Out("STRING", "STRING")])
def text(ctx: object, value: str) -> str:
    return value


def _registry() -> Registry:
    reg = Registry()
    reg.add_pack("test_paths", [copy_file, text])
    return reg


def _graph(src: str, dst: str = "out") -> Graph:
    g = Graph()
    g.add_node("test_paths.copy", {"src": src, "dst": dst, "note": "/etc/passwd"}, id="c")
    return g


@pytest.fixture()
def policy(tmp_path):
    (tmp_path / "in").mkdir()
    return {PATH_POLICY: PathPolicy(tmp_path / "in", tmp_path / "out")}


def test_reads_outside_the_input_folder_are_refused_before_any_fingerprint(policy, tmp_path):
    LOOKED_AT.clear()
    for src in ("/etc/passwd", str(tmp_path / "elsewhere.png"), "../x.png", "a/../../x.png", "C:/x.png"):
        with pytest.raises(WorkflowInvalid) as err:
            build_plan(_graph(src), _registry(), settings=policy)
        (issue,) = err.value.issues
        assert (issue.kind, issue.node_id, issue.input) == ("path_not_allowed", "c", "src")
    assert LOOKED_AT == []  # the disk was never consulted for a refused path
    plan = build_plan(_graph("photos/a.png"), _registry(), settings=policy)
    assert plan.constants["c"]["src"] == str((tmp_path / "in" / "photos" / "a.png").resolve())
    assert plan.constants["c"]["note"] == "/etc/passwd"  # not a path input: untouched
    assert LOOKED_AT == [plan.constants["c"]["src"]]


def test_writes_must_stay_inside_the_output_folder(policy):
    for dst in ("/tmp/x", "../x", "a/../../x", ".", "bad\x07name"):
        with pytest.raises(WorkflowInvalid) as err:
            build_plan(_graph("a.png", dst), _registry(), settings=policy)
        assert [(i.input, i.kind) for i in err.value.issues] == [("dst", "path_not_allowed")]
    assert build_plan(_graph("a.png", "sub/name"), _registry(), settings=policy).constants["c"]["dst"] == "sub/name"


def test_linked_path_inputs_are_refused_under_a_policy_only(policy):
    g = _graph("a.png")
    g.add_node("test_paths.text", {"value": "/etc/passwd"}, id="t")
    g.connect("t", "STRING", "c", "src")
    with pytest.raises(WorkflowInvalid) as err:
        build_plan(g, _registry(), settings=policy)
    assert [(i.node_id, i.input, i.kind) for i in err.value.issues] == [("c", "src", "path_not_allowed")]
    build_plan(g, _registry())  # without a policy (CLI, editor) the workflow is the user's own


def test_without_a_policy_values_are_unchanged():
    plan = build_plan(_graph("/abs/a.png", "../up"), _registry())
    assert plan.constants["c"]["src"] == "/abs/a.png" and plan.constants["c"]["dst"] == "../up"


def test_spec_checks_the_path_role():
    assert copy_file.inputs[0].to_dict()["path"] == "read" and "path" not in copy_file.inputs[2].to_dict()
    bad = NodeSpec("test_paths.bad", copy_file.fn, inputs=(Input("src", "INT", Widget.INT, 0, path=PATH_READ),
                                                           copy_file.inputs[1], copy_file.inputs[2]),
                   output_node=True)
    with pytest.raises(SpecError, match="path"):
        check_spec(bad)
    with pytest.raises(SpecError, match="path"):
        check_spec(NodeSpec("test_paths.bad2", copy_file.fn,
                            inputs=(String("src", path="execute"), *copy_file.inputs[1:]), output_node=True))
    assert Int("n").path == ""
