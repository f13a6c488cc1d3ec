"""Workflow files that are valid-looking JSON but hostile: duplicate keys, huge files, NaN layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph import WorkflowFileError
from nodegraph.cli import main
from nodegraph.jsontext import MAX_WORKFLOW_BYTES
from nodegraph.open import open_any
from nodegraph.workflow import dumps, loads

ROOT = Path(__file__).resolve().parents[2]
COMFY = ROOT / "tests" / "comfy" / "fixtures"


def _standard(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("source", ["workflows/txt2img.json", "tests/comfy/fixtures/txt2img_api.json",
                                    "tests/comfy/fixtures/txt2img_ui.json"])
def test_a_duplicate_key_refuses_the_file(tmp_path: Path, source: str) -> None:
    text = (ROOT / source).read_text()
    # Repeat the first key of the document with another value: the classic "shows A, runs B" trick.
    key = next(iter(json.loads(text)))
    hostile = text.replace("{", "{" + json.dumps(key) + ': {"x": 1}, ', 1)
    path = tmp_path / "dup.json"
    path.write_text(hostile)
    with pytest.raises(WorkflowFileError, match=f"key '{key}' appears twice") as info:
        open_any(path)
    assert str(path) in str(info.value) and "delete the other" in str(info.value)


def test_a_duplicate_key_deep_inside_a_node_is_refused_too() -> None:
    text = '{"nodes": {"1": {"type": "primitives.int", "values": {"value": 1, "value": 2}}}}'
    with pytest.raises(WorkflowFileError, match="'value' appears twice"):
        loads(text, source="x.json")


def test_cli_validate_refuses_a_duplicate_key_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"nodes": {"1": {"type": "primitives.int"}, "1": {"type": "primitives.show"}}}')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'1' appears twice" in err[0]


def test_a_workflow_over_the_size_cap_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:  # sparse: the size is what counts, nothing is read
        fh.truncate(MAX_WORKFLOW_BYTES + 1)
    with pytest.raises(WorkflowFileError, match="over the 32 MiB a workflow file may have"):
        open_any(path)


def test_nan_and_infinity_in_layout_never_come_back_as_non_standard_json(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    nid = next(iter(doc["nodes"]))
    doc["nodes"][nid]["ui"] = {"pos": "POS", "size": [200, 100], "custom": "C"}
    doc["meta"]["zoom"] = "Z"
    text = (json.dumps(doc).replace('"POS"', "[NaN, Infinity]").replace('"Z"', "-Infinity")
            .replace('"C"', "[1, NaN]"))
    path = tmp_path / "nan.json"
    path.write_text(text)
    graph, _ = open_any(path)
    assert "pos" not in graph.node(nid).ui and graph.node(nid).ui["size"] == [200, 100]
    saved = _standard(dumps(graph))
    assert saved["meta"]["zoom"] is None and saved["nodes"][nid]["ui"]["custom"] == [1, None]


def test_comfy_layout_with_infinity_is_dropped_not_written_back(tmp_path: Path) -> None:
    doc = json.loads((COMFY / "txt2img_ui.json").read_text())
    doc["nodes"][0]["pos"] = "P"
    doc["groups"] = [{"title": "g", "bounding": "B"}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc).replace('"P"', "[Infinity, 3]").replace('"B"', "[0, 0, NaN, 5]"))
    graph, notes = open_any(path)
    assert "pos" not in graph.node(str(doc["nodes"][0]["id"])).ui  # the editor places it
    assert not graph.groups and any("group #0" in n for n in notes)
    _standard(dumps(graph))
