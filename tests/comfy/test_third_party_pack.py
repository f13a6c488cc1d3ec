"""A third-party pack takes part in ComfyUI import/export exactly like ours.

The pack below is defined here, registers through the public API only
(``Registry.add_pack(..., comfy=ComfyMappings(...))``) and is never named by
the engine: importing a ComfyUI API prompt and UI workflow that use its class,
running the result and exporting it back all go through the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodegraph import Executor, Registry
from nodegraph.comfy import ComfyMappings, ComfyTable, L, NodeMap, W, load_comfy, to_comfy_api
from nodegraph.comfy.result import ImportResult
from nodegraph.context import NodeContext
from nodegraph.errors import SpecError
from nodegraph.spec import Combo, In, Int, Out, Seed, String, node
from nodes.primitives import register as primitives


@node("acme.repeat", category="acme", display_name="Repeat Text",
      inputs=[In("text", "STRING"), Int("times", 2, min=1, max=10), Seed("noise_seed", 0),
              Combo("joiner", ["space", "comma"], default="space")],
      outputs=[Out("joined", "STRING"), Out("count", "INT")])
def repeat(ctx: NodeContext, text: str, times: int, noise_seed: int, joiner: str) -> tuple[str, int]:
    """Repeat a text; the seed only shows that seed widgets and their controls round-trip."""
    sep = " " if joiner == "space" else ", "
    return sep.join([text] * times), times


@node("acme.label", category="acme", display_name="Label", inputs=[String("label", "")],
      outputs=[Out("STRING", "STRING")])
def label(ctx: NodeContext, label: str) -> str:
    """A constant text."""
    return label


ACME_MAPS = (
    # ComfyUI declares: text (link), times, seed (+ control_after_generate), separator.
    NodeMap("AcmeRepeat", "acme.repeat",
            (L("text"), W("times"), W("seed", "noise_seed", seed=True),
             W("separator", "joiner", values={" ": "space", ",": "comma"})),
            ("joined", "count")),
    NodeMap("AcmeLabel", "acme.label", (W("label"),), ("STRING",)),
)


def _mark_imported(result: ImportResult) -> None:
    """An import hook: the pack tags its nodes, proving hooks run on every import."""
    for n in result.graph:
        if n.type.startswith("acme."):
            n.ui["acme_imported"] = True


ACME = ComfyMappings(maps=ACME_MAPS, import_hooks=(_mark_imported,))


def register_acme(registry: Registry) -> None:
    registry.add_pack("acme", [repeat, label], comfy=ACME)


def acme_registry() -> Registry:
    reg = Registry()
    reg.load_pack(primitives)  # a stock pack beside it: ComfyUI's PrimitiveString maps through it
    reg.load_pack(register_acme)
    return reg


API_PROMPT: dict[str, Any] = {
    "1": {"class_type": "PrimitiveString", "inputs": {"value": "ho"}, "_meta": {"title": "Word"}},
    "2": {"class_type": "AcmeRepeat", "inputs": {"text": ["1", 0], "times": 3, "seed": 77, "separator": ","},
          "_meta": {"title": "Repeat"}},
    "3": {"class_type": "AcmeRepeat", "inputs": {"text": ["2", 0], "times": ["4", 0], "seed": 5, "separator": " "},
          "_meta": {"title": "Again"}},
    "4": {"class_type": "PrimitiveInt", "inputs": {"value": 2}, "_meta": {"title": "Times"}},
}

UI_WORKFLOW: dict[str, Any] = {
    "nodes": [
        {"id": 10, "type": "AcmeLabel", "pos": [0, 0], "mode": 0, "widgets_values": ["la"],
         "outputs": [{"name": "STRING", "type": "STRING", "links": [1]}]},
        {"id": 11, "type": "Reroute", "pos": [150, 0], "mode": 0,
         "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"name": "", "type": "*", "links": [2]}]},
        {"id": 12, "type": "AcmeRepeat", "pos": [300, 0], "mode": 0,
         "inputs": [{"name": "text", "type": "STRING", "link": 2}],
         "outputs": [{"name": "joined", "type": "STRING", "links": []},
                     {"name": "count", "type": "INT", "links": []}],
         "widgets_values": [4, 123, "randomize", ","]},
    ],
    "links": [[1, 10, 0, 11, 0, "STRING"], [2, 11, 0, 12, 0, "STRING"]],
    "groups": [],
}


def test_api_prompt_imports_through_the_third_party_mapping() -> None:
    result = load_comfy(API_PROMPT, acme_registry())
    g = result.graph
    assert result.unmapped == []
    assert {n.id: n.type for n in g} == {"1": "primitives.string", "2": "acme.repeat", "3": "acme.repeat",
                                         "4": "primitives.int"}
    # ComfyUI names and values became ours: seed -> noise_seed, "," -> "comma".
    assert g.node("2").values == {"times": 3, "noise_seed": 77, "joiner": "comma"}
    assert g.node("3").values == {"noise_seed": 5, "joiner": "space"}
    links = {(lk.src, lk.src_output, lk.dst, lk.dst_input) for lk in g.links}
    assert links == {("1", "STRING", "2", "text"), ("2", "joined", "3", "text"), ("4", "INT", "3", "times")}
    assert all(g.node(i).ui.get("acme_imported") for i in ("2", "3"))  # the pack's import hook ran


def test_imported_third_party_graph_runs(tmp_path: Path) -> None:
    reg = acme_registry()
    g = load_comfy(API_PROMPT, reg).graph
    report = Executor(reg, device="cpu", output_dir=tmp_path).run(g, outputs=["3"])
    report.raise_for_status()
    assert report.results["3"] == {"joined": "ho, ho, ho ho, ho, ho", "count": 2}


def test_api_prompt_round_trips_through_export() -> None:
    reg = acme_registry()
    prompt = to_comfy_api(load_comfy(API_PROMPT, reg).graph, reg)
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in API_PROMPT.items()}


def test_ui_workflow_imports_and_exports() -> None:
    reg = acme_registry()
    result = load_comfy(UI_WORKFLOW, reg)
    g = result.graph
    assert result.unmapped == []
    assert g.node("11").type == "primitives.reroute"  # the stock pack's reroute, found through the registry
    rep = g.node("12")
    assert rep.values == {"times": 4, "noise_seed": 123, "joiner": "comma"}
    assert rep.ui["seed_control"] == {"noise_seed": "randomize"}
    assert rep.ui["pos"] == [300.0, 0.0] and rep.ui["acme_imported"] is True
    assert g.link_into("12", "text").src == "11"

    prompt = to_comfy_api(g, reg)
    assert prompt["12"]["class_type"] == "AcmeRepeat"
    # The reroute is followed to its source; widgets go back under ComfyUI's names and values.
    assert prompt["12"]["inputs"] == {"text": ["10", 0], "times": 4, "seed": 123, "separator": ","}
    assert prompt["10"] == {"class_type": "AcmeLabel", "inputs": {"label": "la"}, "_meta": {"title": "Label"}}
    assert "11" not in prompt


def test_without_the_pack_its_classes_are_placeholders() -> None:
    """The mapping lives with the pack: a registry without it knows nothing about AcmeRepeat."""
    reg = Registry()
    reg.load_pack(primitives)
    result = load_comfy(API_PROMPT, reg)
    assert sorted(result.unmapped) == [("2", "AcmeRepeat"), ("3", "AcmeRepeat")]
    assert result.graph.node("2").type == "comfy:AcmeRepeat"
    assert result.graph.node("1").type == "primitives.string"
    assert "AcmeRepeat" not in ComfyTable.of(reg).by_comfy
    assert ComfyTable.of(acme_registry()).by_comfy["AcmeRepeat"].ours == "acme.repeat"


def test_a_mapping_that_names_a_missing_input_fails_at_registration() -> None:
    bad = ComfyMappings(maps=(NodeMap("AcmeRepeat", "acme.repeat", (L("text"), W("times"), W("seed")),
                                      ("joined",)),))
    reg = Registry()
    with pytest.raises(SpecError, match=r"AcmeRepeat\.seed maps onto input 'seed'"):
        reg.add_pack("acme", [repeat, label], comfy=bad)
    assert "acme.repeat" not in reg and not reg.comfy_mappings()  # all or nothing

    wrong_output = ComfyMappings(maps=(NodeMap("AcmeLabel", "acme.label", (W("label"),), ("TEXT",)),))
    with pytest.raises(SpecError, match="output 'TEXT'"):
        reg.add_pack("acme", [label], comfy=wrong_output)


def test_two_packs_cannot_map_one_comfy_class() -> None:
    reg = acme_registry()

    @node("other.label", inputs=[String("label", "")], outputs=[Out("STRING", "STRING")])
    def other_label(ctx: NodeContext, label: str) -> str:
        return label

    clash = ComfyMappings(maps=(NodeMap("AcmeLabel", "other.label", (W("label"),), ("STRING",)),))
    with pytest.raises(SpecError, match="mapped by pack 'acme' and again by pack 'other'"):
        reg.add_pack("other", [other_label], comfy=clash)
    assert "other.label" not in reg
    assert ComfyTable.of(reg).by_comfy["AcmeLabel"].ours == "acme.label"


def test_comfy_argument_must_be_comfy_mappings() -> None:
    reg = Registry()
    with pytest.raises(SpecError, match="expects a nodegraph.comfy.ComfyMappings, got tuple"):
        reg.add_pack("acme", [label], comfy=ACME_MAPS)  # type: ignore[arg-type]
    assert "acme.label" not in reg


def test_without_a_reroute_pack_reroutes_stay_visible_placeholders() -> None:
    reg = Registry()
    reg.load_pack(register_acme)  # no primitives pack: nobody offers a reroute node
    result = load_comfy(UI_WORKFLOW, reg)
    assert result.unmapped == [("11", "Reroute")]
    assert result.graph.node("11").type == "comfy:Reroute"
    assert result.graph.link_into("12", "text").src == "11"  # the wiring is kept through it
