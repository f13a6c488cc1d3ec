"""ComfyUI subgraphs (UI format ``definitions.subgraphs``): nested definitions, promoted widgets and
links across the boundary import as our subgraphs, validate, run on the demo model with the cache
keys of the equivalent flat graph, and export flattened to the API format."""

from __future__ import annotations

import copy
import json

import pytest

from nodegraph import Executor, Graph, build_plan, validate, workflow
from nodegraph.comfy import export_comfy_api, load_comfy
from tests.comfy.helpers import full_registry
from tests.comfy.subgraph_fixtures import DEMO, NEG, T2I
from tests.comfy.subgraph_fixtures import workflow as comfy_workflow

REG = full_registry()


@pytest.fixture(scope="module")
def imported():  # noqa: ANN201
    return load_comfy(comfy_workflow())


def flat_equivalent() -> Graph:
    """What the two instances compute, written flat with our node types by hand."""
    g = Graph()
    g.add_node("diffusion.checkpoint_loader", {"ckpt_name": DEMO}, id="4")
    for inst, text, seed, prefix in (("10", "a red circle on a blue background", 7, "sg_a"),
                                     ("11", "a blue square", 42, "sg_b")):
        p = f"{inst}/"
        g.add_node("diffusion.empty_latent", {"width": 64, "height": 64, "batch_size": 1}, id=p + "5")
        g.add_node("diffusion.text_encode", {"text": text}, id=p + "6")
        g.add_node("diffusion.text_encode", {"text": "blurry"}, id=p + "7/1")
        g.add_node("diffusion.ksampler", {"seed": seed, "steps": 4, "cfg": 5, "sampler_name": "euler",
                                          "scheduler": "normal", "denoise": 1}, id=p + "3")
        g.add_node("diffusion.vae_decode", id=p + "8")
        g.add_node("image.save", {"filename_prefix": prefix}, id=f"save_{inst}")
        for src, out, dst, inp in (("4", "VAE", p + "5", "vae"), ("4", "CLIP", p + "6", "clip"),
                                   ("4", "CLIP", p + "7/1", "clip"), ("4", "MODEL", p + "3", "model"),
                                   (p + "6", "CONDITIONING", p + "3", "positive"),
                                   (p + "7/1", "CONDITIONING", p + "3", "negative"),
                                   (p + "5", "LATENT", p + "3", "latent_image"),
                                   (p + "3", "LATENT", p + "8", "samples"),
                                   ("4", "VAE", p + "8", "vae"), (p + "8", "IMAGE", f"save_{inst}", "images")):
            g.connect(src, out, dst, inp)
    return g


def test_definitions_instances_and_promoted_widgets(imported):
    g = imported.graph
    assert imported.warnings == [] and imported.unmapped == []
    assert set(g.subgraphs) == {T2I, NEG}
    t2i = g.subgraphs[T2I]
    assert t2i.name == "Text to image" and [i.name for i in t2i.inputs] == ["model", "clip", "vae", "text"]
    assert t2i.input("clip").targets == (("6", "clip"), ("7", "clip"))
    assert t2i.input("vae").targets == (("8", "vae"), ("5", "vae"))  # the latent is sized for the VAE outside
    assert t2i.input("text").widget is not None and t2i.output("IMAGE").source == ("8", "IMAGE")
    assert t2i.graph.node("7").type == "subgraph:" + NEG
    assert g.node("10").type == g.node("11").type == "subgraph:" + T2I
    # promoted via the interface input ("-1") and via proxyWidgets into inner node 3 (per instance)
    assert g.node("10").values == {"text": "a red circle on a blue background", "3.seed": 7}
    assert g.node("11").values == {"text": "a blue square"}
    assert t2i.graph.node("3").values["seed"] == 42  # the shared inner value is untouched


def test_nested_definitions_inside_their_user_import_the_same(imported):
    other = load_comfy(comfy_workflow(nested_in_root=False))
    assert workflow.dumps(other.graph) == workflow.dumps(imported.graph)


def test_validates_and_has_the_cache_keys_of_the_flat_graph(imported):
    assert validate(imported.graph, REG) == []
    keys = build_plan(imported.graph, REG, output_dir="/o").keys
    flat = build_plan(flat_equivalent(), REG, output_dir="/o").keys
    renamed = {("9" if k == "save_10" else "12" if k == "save_11" else k): v for k, v in flat.items()}
    assert keys == renamed


def test_runs_on_the_demo_model_and_survives_our_file_format(imported, tmp_path):
    ex = Executor(REG, device="cpu", output_dir=tmp_path / "out")
    report = ex.run(imported.graph)
    assert report.ok, report.error
    assert sorted(p.rsplit("/", 1)[-1] for p in report.outputs) == ["sg_a_00001.png", "sg_b_00001.png"]
    assert report.nodes["10/3"].status == "executed" and report.nodes["4"].status == "executed"
    again = workflow.loads(workflow.dumps(imported.graph))  # saved as our v2 file, reopened
    second = ex.run(again)
    assert set(second.cached()) == set(report.nodes)  # same keys: nothing re-runs


def test_exports_flattened_to_the_api_format(imported):
    prompt = export_comfy_api(imported.graph, REG).prompt
    assert set(prompt) == {"4", "9", "12"} | {f"{i}:{n}" for i in ("10", "11") for n in ("5", "6", "7:1", "3", "8")}
    sampler = prompt["10:3"]
    assert sampler["class_type"] == "KSampler" and sampler["inputs"]["seed"] == 7
    assert sampler["inputs"]["model"] == ["4", 0] and sampler["inputs"]["negative"] == ["10:7:1", 0]
    assert prompt["11:3"]["inputs"]["seed"] == 42 and prompt["10:6"]["inputs"]["text"].startswith("a red circle")
    assert prompt["9"]["inputs"]["images"] == ["10:8", 0]
    back = load_comfy(json.loads(json.dumps(prompt)))
    assert validate(back.graph, REG) == []


def test_bypassed_and_muted_instances(imported):
    g = imported.graph.copy()
    g.set_mode("11", "mute")
    plan = build_plan(g, REG)
    assert "11/3" not in plan.order and plan.skipped["12"].startswith("input 'images'")
    g.set_mode("11", "bypass")  # IMAGE output, no IMAGE input to pass through
    assert [(i.node_id, i.kind) for i in validate(g, REG)] == [("12", "bypass_unresolved")]


@pytest.mark.parametrize(("mutate", "warning"), [
    (lambda d: d["definitions"].update(subgraphs="nope"), "'definitions.subgraphs' is not a list"),
    (lambda d: d["definitions"]["subgraphs"].append({"name": "no id"}), "has no 'id' or 'nodes'"),
    (lambda d: d["definitions"]["subgraphs"][0]["links"].append(
        {"id": 99, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 7, "type": "LATENT"}), None),
    (lambda d: d["definitions"]["subgraphs"][1]["nodes"].append({"id": 50, "type": T2I, "inputs": [],
                                                                 "outputs": []}), "contain each other"),
])
def test_malformed_subgraphs_warn_instead_of_crashing(mutate, warning):
    doc = comfy_workflow()
    mutate(doc)
    result = load_comfy(copy.deepcopy(doc))
    if warning is not None:
        assert any(warning in w for w in result.warnings), result.warnings
    issues = validate(result.graph, REG, scope="all")  # reports, never raises
    if warning == "contain each other":
        assert any("contains itself" in i.message for i in issues)


def test_every_mutation_of_the_subgraph_part_imports_or_fails_cleanly():
    """Each subgraph-specific value (a definition's interface, boundary links, I/O nodes, nesting, the
    node types that reference definitions; an instance's inputs, outputs, properties and widget values),
    replaced by each kind of wrong JSON value: the import returns a graph (whose validation returns a
    list) or raises ComfyFormatError.  (Generic node fields such as ``mode`` are the UI importer's.)"""
    from nodegraph.comfy.result import ComfyFormatError

    base = comfy_workflow()
    paths: list[tuple] = []
    stack: list[tuple[tuple, object]] = [(("definitions",), base["definitions"]), (("nodes", 1), base["nodes"][1])]
    while stack:
        p, v = stack.pop()
        paths.append(p)
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        stack.extend(((*p, k), child) for k, child in items)
    def ours(p: tuple) -> bool:
        if p[0] == "nodes":
            return len(p) > 2 and p[2] in ("inputs", "outputs", "properties", "widgets_values", "type")
        inner = p[3:]  # ("definitions", "subgraphs", i, key, ...)
        return not inner or inner[0] not in ("nodes", "groups") or (len(inner) == 3 and inner[2] == "type")

    paths = [p for p in paths if ours(p)]
    assert len(paths) > 150
    for path in paths:
        for value in (None, -10, "x", [], {}):
            doc = copy.deepcopy(base)
            holder = doc
            for k in path[:-1]:
                holder = holder[k]
            holder[path[-1]] = value
            try:
                result = load_comfy(doc)
            except ComfyFormatError:
                continue
            assert isinstance(validate(result.graph, REG, scope="all", settings={"include_demo_models": False}),
                              list), (path, value)


def test_a_bypassed_instance_exports_as_its_pass_through():
    from nodegraph.subgraph import extract

    g = Graph()
    g.add_node("image.load", {"image": "in.png"}, id="load")
    g.add_node("image.invert", id="inv")
    g.add_node("image.save", {"filename_prefix": "x"}, id="save")
    g.connect("load", "IMAGE", "inv", "image")
    g.connect("inv", "IMAGE", "save", "images")
    extract(g, REG, ["inv"], "negative", instance_id="neg")
    assert export_comfy_api(g, REG).prompt["save"]["inputs"]["images"] == ["neg:inv", 0]
    g.set_mode("neg", "bypass")
    prompt = export_comfy_api(g, REG).prompt
    assert set(prompt) == {"load", "save"} and prompt["save"]["inputs"]["images"] == ["load", 0]


def test_instance_widget_values_quirks():
    doc = comfy_workflow()
    inst = doc["nodes"][1]
    inst["widgets_values"] = []  # versions where the values lived on the shared inner widgets
    g = load_comfy(copy.deepcopy(doc)).graph
    assert g.node("10").values == {}
    inst["widgets_values"] = {"text": "by name"}  # a frontend that saves widgets by name
    assert load_comfy(copy.deepcopy(doc)).graph.node("10").values == {"text": "by name"}
    inst["widgets_values"] = ["a", 1, "fixed", "one too many", 5]
    result = load_comfy(copy.deepcopy(doc))
    assert result.graph.node("10").values == {"text": "a", "3.seed": 1}
    assert any("5 widget value(s) for 2 promoted widget(s)" in w for w in result.warnings)
    inst["properties"]["proxyWidgets"] = [["3", "3: 3: seed"], ["9", "cfg"]]  # composite name; a missing node
    inst["widgets_values"] = [11, 2.5]
    result = load_comfy(copy.deepcopy(doc))
    assert result.graph.node("10").values == {"3.seed": 11}
    assert any("inner node '9'" in w for w in result.warnings)


def test_a_primitive_node_feeding_an_instance_widget_sets_the_promoted_input():
    doc = comfy_workflow()
    inst = doc["nodes"][2]  # instance 11, no proxyWidgets
    inst["inputs"][3]["link"] = 9
    doc["nodes"].append({"id": 13, "type": "PrimitiveNode", "pos": [0, 0], "size": [200, 80], "flags": {}, "order": 13,
                         "mode": 0, "outputs": [{"name": "STRING", "type": "STRING", "links": [9],
                                                 "widget": {"name": "text"}}],
                         "properties": {"Run widget replace on values": False}, "widgets_values": ["from a primitive"]})
    doc["links"].append([9, 13, 0, 11, 3, "STRING"])
    g = load_comfy(doc).graph
    assert g.node("11").values["text"] == "from a primitive" and "13" not in g.nodes
