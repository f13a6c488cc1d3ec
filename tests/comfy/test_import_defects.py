"""Importer defects found on real ComfyUI files: boolean seed controls, two checkpoint loaders,
bypassed unknown nodes."""

from __future__ import annotations

import pytest

from nodegraph import Graph, build_plan, validate
from nodegraph.comfy import export_comfy_api, load_comfy
from tests.comfy.helpers import NO_MODELS, full_registry

REG = full_registry()


def ui_node(nid: int, cls: str, widgets: list | None = None, *, inputs: list | None = None,
            outputs: list | None = None, mode: int = 0) -> dict:
    node = {"id": nid, "type": cls, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": nid, "mode": mode,
            "properties": {"Node name for S&R": cls}, "inputs": inputs or [], "outputs": outputs or []}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def ksampler_doc(widgets: list) -> dict:
    return {"last_node_id": 3, "last_link_id": 0, "version": 0.4, "links": [],
            "nodes": [ui_node(3, "KSampler", widgets)]}


@pytest.mark.parametrize(("widgets", "control"), [
    ([42, True, 20, 8, "euler", "normal", 1], "randomize"),  # ComfyUI's own default workflow, older frontends
    ([42, False, 20, 8, "euler", "normal", 1], "fixed"),
    ([42, "increment", 20, 8, "euler", "normal", 1], "increment"),
    ([42, 20, 8, "euler", "normal", 1], None),  # an exporter that drops the control
])
def test_ksampler_widget_values_align_with_any_seed_control(widgets, control):
    result = load_comfy(ksampler_doc(widgets))
    node = result.graph.node("3")
    assert node.values == {"seed": 42, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                           "denoise": 1}
    assert node.ui.get("seed_control", {}).get("seed") == control
    assert not [w for w in result.warnings if "more than expected" in w]
    issues = validate(result.graph, REG, scope="all", settings=NO_MODELS)
    assert not [i for i in issues if i.node_id == "3" and i.input not in (None, "model", "positive", "negative",
                                                                          "latent_image")]


def test_ksampler_advanced_with_boolean_control_keeps_later_values():
    doc = ksampler_doc([])
    doc["nodes"] = [ui_node(4, "KSamplerAdvanced", ["enable", 7, True, 25, 6.5, "euler", "karras", 0, 10000,
                                                    "disable"])]
    node = load_comfy(doc).graph.node("4")
    assert node.values["noise_seed"] == 7 and node.values["steps"] == 25 and node.values["cfg"] == 6.5
    assert node.values["return_with_leftover_noise"] == "disable"
    assert node.ui["seed_control"] == {"noise_seed": "randomize"}


def _api_two_checkpoints(*, lora: bool = False, two_pass: bool = False) -> dict:
    doc = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["2", 1]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 1, "steps": 2, "cfg": 5,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                                                   "positive": ["4", 0], "negative": ["4", 0],
                                                   "latent_image": ["3", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["2", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "x"}},
    }
    if lora:
        doc["8"] = {"class_type": "LoraLoader", "inputs": {"model": ["2", 0], "clip": ["2", 1], "lora_name": "l",
                                                           "strength_model": 1, "strength_clip": 1}}
        doc["5"]["inputs"]["model"] = ["8", 0]
    if two_pass:  # first pass on checkpoint 1, latent upscaled, second pass on checkpoint 2
        doc["5"]["inputs"]["model"] = ["1", 0]
        doc["9"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["5", 0], "upscale_method": "nearest-exact",
                                                               "scale_by": 2}}
        doc["10"] = {"class_type": "KSampler", "inputs": {**doc["5"]["inputs"], "model": ["2", 0],
                                                          "latent_image": ["9", 0], "denoise": 0.5}}
        doc["6"]["inputs"]["samples"] = ["10", 0]
    return doc


@pytest.mark.parametrize(("variant", "expected"), [({}, "2"), ({"lora": True}, "2"), ({"two_pass": True}, "1")])
def test_empty_latent_takes_the_vae_of_the_checkpoint_that_samples_it(variant, expected):
    result = load_comfy(_api_two_checkpoints(**variant))
    link = result.graph.link_into("3", "vae")
    assert link is not None and (link.src, link.src_output) == (expected, "VAE")


def test_unrelated_checkpoints_leave_the_latent_alone_with_a_warning():
    doc = _api_two_checkpoints()
    doc["5"]["inputs"]["model"] = ["11", 0]
    doc["11"] = {"class_type": "SomeModelMerger", "inputs": {"model1": ["1", 0], "model2": ["2", 0]}}
    result = load_comfy(doc)
    assert result.graph.link_into("3", "vae") is None
    assert any("cannot tell which of the checkpoints" in w for w in result.warnings)


def _bypass_doc(mode: int) -> dict:
    return {"last_node_id": 3, "last_link_id": 2, "version": 0.4, "nodes": [
        ui_node(1, "LoadImage", ["in.png", "image"], outputs=[
            {"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0},
            {"name": "MASK", "type": "MASK", "links": None, "slot_index": 1}]),
        ui_node(2, "FancyUpscaler", [2.0], mode=mode,
                inputs=[{"name": "mask", "type": "MASK", "link": None},
                        {"name": "image", "type": "IMAGE", "link": 1},
                        {"name": "scale", "type": "FLOAT", "widget": {"name": "scale"}, "link": None}],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2], "slot_index": 0}]),
        ui_node(3, "SaveImage", ["out"], inputs=[{"name": "images", "type": "IMAGE", "link": 2}]),
    ], "links": [[1, 1, 0, 2, 1, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}


def test_bypassing_an_unknown_node_passes_its_input_through(tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "in.png")
    settings = {"input_dir": str(tmp_path / "in")}
    active = load_comfy(_bypass_doc(0)).graph
    [issue] = validate(active, REG, settings=settings)
    assert issue.kind == "unknown_type" and issue.node_id == "2"
    bypassed = load_comfy(_bypass_doc(4)).graph
    assert bypassed.node("2").extra["ports"] == {"inputs": {"mask": "MASK", "image": "IMAGE", "scale": "FLOAT"},
                                                 "outputs": {"IMAGE": "IMAGE"}}
    plan = build_plan(bypassed, REG, settings=settings)
    assert plan.sources["3"]["images"] == ("1", "IMAGE") and "2" not in plan.order
    prompt = export_comfy_api(bypassed, REG).prompt
    assert set(prompt) == {"1", "3"} and prompt["3"]["inputs"]["images"] == ["1", 0]


def test_bypassed_placeholder_without_declared_types_uses_what_the_consumer_expects():
    g = Graph()
    g.add_node("image.load", {"image": "x.png"}, id="load")
    g.add_node("comfy:Mystery", id="m", mode="bypass")  # an API-format placeholder: no port types known
    g.connect("load", "MASK", "m", "0")
    g.connect("load", "IMAGE", "m", "1")
    g.add_node("image.invert", id="inv")
    g.connect("m", "0", "inv", "image")
    issues = validate(g, REG, targets=["inv"], settings={"input_dir": "/nonexistent"})
    assert [(i.node_id, i.kind) for i in issues] == [("load", "not_in_choices")]  # "m" passes IMAGE through
    g.disconnect("m", "1")
    issues = validate(g, REG, targets=["inv"], settings={"input_dir": "/nonexistent"})
    assert ("inv", "bypass_unresolved") in [(i.node_id, i.kind) for i in issues]
