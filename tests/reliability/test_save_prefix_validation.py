"""Save prefixes are checked by validation, not only by the Save node after the whole graph ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph import Graph, NodeInputError, Registry, validate
from nodegraph.cli import main
from nodegraph.outputs import check_prefix, confined_path
from nodes import primitives

HOSTILE = ["../escape", "/etc/passwd", "C:/Windows/x", "a/../../b", "photo\u202egpj.exe", "bell\x07",
           "zero\u200bwidth", "esc\x1b[31m", "del\x7f", "c1\x85", ".", "", "a|b"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    primitives.register(reg)
    return reg


def _graph(prefix: str) -> Graph:
    g = Graph()
    g.add_node("primitives.string", {"value": "hello"}, id="text")
    g.add_node("primitives.save_text", {"filename_prefix": prefix}, id="save")
    g.connect("text", "STRING", "save", "text")
    return g


@pytest.mark.parametrize("prefix", HOSTILE)
def test_validation_refuses_a_prefix_the_save_node_would_refuse(registry: Registry, prefix: str,
                                                                tmp_path: Path) -> None:
    issues = validate(_graph(prefix), registry)
    assert [(i.node_id, i.input) for i in issues] == [("save", "filename_prefix")], issues
    assert issues[0].fix
    with pytest.raises(NodeInputError):  # the same rule at run time
        confined_path(tmp_path, prefix, ".txt")


@pytest.mark.parametrize("prefix", ["nodegraph", "portraits/img", "sub\\win", "été/日本", "a b-c_d.e"])
def test_ordinary_prefixes_stay_valid(registry: Registry, prefix: str) -> None:
    assert validate(_graph(prefix), registry) == []
    check_prefix(prefix)


def test_right_to_left_override_is_named_in_the_message() -> None:
    with pytest.raises(NodeInputError, match="U\\+202E"):
        check_prefix("invoice\u202efdp.exe")


def test_cli_validate_says_invalid_for_an_escaping_prefix(tmp_path: Path, capsys) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"nodes": {
        "t": {"type": "primitives.string", "inputs": {"value": "x"}},
        "s": {"type": "primitives.save_text", "inputs": {"text": ["t", "STRING"], "filename_prefix": "../../x"}}}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'s'" in err and "filename_prefix" in err and "outside the output folder" in err
