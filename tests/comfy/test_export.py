"""Exporting to ComfyUI's API format, and round trips through it."""

from __future__ import annotations

import pytest

from nodegraph import Graph
from nodegraph.comfy import ComfyExportError, export_comfy_api, load_comfy, to_comfy_api
from tests.comfy.helpers import FIXTURES, fixture, full_registry, semantics
from tests.diffusion.pipeline_fixtures import txt2img_graph


@pytest.fixture(scope="module")
def registry():  # noqa: ANN201
    return full_registry()


def test_api_fixture_round_trip_keeps_semantics(registry) -> None:  # noqa: ANN001
    """import(export(import(x))) computes the same as import(x): every node, value and link of the
    fixture covering all mapped classes (the placeholder exports back as its ComfyUI class)."""
    first = load_comfy(FIXTURES / "all_nodes_api.json").graph
    prompt = to_comfy_api(first, registry)
    second = load_comfy(prompt).graph
    assert semantics(second, registry) == semantics(first, registry)
    assert prompt["37"]["class_type"] == "FaceDetailer"
    assert prompt["37"]["inputs"]["image"] == ["19", 0] and prompt["37"]["inputs"]["guide_size"] == 512


def test_export_writes_comfyui_names_values_and_slots(registry) -> None:  # noqa: ANN001
    prompt = to_comfy_api(load_comfy(FIXTURES / "all_nodes_api.json").graph, registry)
    original = fixture("all_nodes_api.json")
    assert prompt["11"] == {"inputs": {"model": ["2", 0], "seed": 156680208700286, "steps": 20, "cfg": 7.5,
                                       "sampler_name": "dpmpp_2m", "scheduler": "karras", "positive": ["9", 0],
                                       "negative": ["8", 1], "latent_image": ["10", 0], "denoise": 1.0},
                            "class_type": "KSampler", "_meta": {"title": "KSampler"}}
    assert prompt["22"]["inputs"]["upscale_method"] == "nearest-exact"  # our "nearest" back to ComfyUI's name
    assert prompt["40"]["inputs"] == original["40"]["inputs"]  # temporal widgets written with ComfyUI defaults
    assert prompt["1"]["inputs"] == {"ckpt_name": "SD1.5/tiny_sd1.safetensors"}
    assert prompt["6"]["inputs"] == {"image": "photo.png"}
    assert "vae" not in prompt["10"]["inputs"]  # our latent's VAE link has no ComfyUI counterpart
    assert prompt["54"]["inputs"]["width"] == ["49", 0] and prompt["49"]["class_type"] == "PrimitiveInt"
    for nid, node in original.items():  # every other input the fixture gave survives unchanged
        if nid in ("1", "2", "6", "8", "20"):
            continue
        for name, value in node["inputs"].items():
            assert prompt[nid]["inputs"][name] == value, (nid, name)


def test_native_graph_round_trip(registry) -> None:  # noqa: ANN001
    native = txt2img_graph("tiny_sd1.safetensors", seed=7, sampler="dpmpp_2m", scheduler="karras")
    prompt = to_comfy_api(native, registry)
    assert prompt["sampler"]["class_type"] == "KSampler"
    assert prompt["sampler"]["inputs"]["latent_image"] == ["latent", 0]
    assert prompt["decode"]["inputs"]["vae"] == ["ckpt", 2]
    back = load_comfy(prompt).graph
    assert semantics(back, registry) == semantics(native, registry)


def test_ui_import_exports_like_comfyui_queues_it(registry) -> None:  # noqa: ANN001
    """Reroutes are followed, bypassed nodes passed through, muted ones left out; the UI-only custom
    node is named in the error and, once removed, everything else exports."""
    graph = load_comfy(FIXTURES / "all_nodes_ui.json").graph
    with pytest.raises(ComfyExportError) as err:
        to_comfy_api(graph, registry)
    assert err.value.nodes == [("37", "comfy:FaceDetailer")]
    assert "FaceDetailer" in str(err.value)

    graph.remove_node("37")
    prompt = to_comfy_api(graph, registry)
    assert prompt["14"]["inputs"]["vae"] == ["12", 0]  # through the reroute
    assert prompt["11"]["inputs"]["positive"] == ["8", 0]  # through bypassed ControlNetApply "9"
    assert "9" not in prompt and "24" not in prompt and "13" not in prompt
    assert prompt["17"]["inputs"]["noise_seed"] == 1234
    assert prompt["11"]["inputs"]["sampler_name"] == "dpmpp_2m_sde"
    assert "image2" not in prompt["44"]["inputs"]  # its source was removed


def test_seed_primitive_is_folded_into_the_widget_it_feeds(registry) -> None:  # noqa: ANN001
    g = txt2img_graph("tiny_sd1.safetensors")
    g.add_node("primitives.seed", {"seed": 987}, id="seed")
    g.add_node("primitives.reroute", {}, id="r")
    g.connect("seed", "seed", "r", "input")
    g.connect("r", "output", "sampler", "seed")
    prompt = to_comfy_api(g, registry)
    assert prompt["sampler"]["inputs"]["seed"] == 987
    assert "seed" not in prompt and "r" not in prompt


def test_nodes_without_equivalent_are_all_listed(registry) -> None:  # noqa: ANN001
    g = Graph()
    g.add_node("image.load", {"image": "a.png"}, id="load")
    g.add_node("image.composite", {}, id="comp")
    g.add_node("image.blur_mask", {}, id="blur")
    g.add_node("primitives.save_text", {}, id="text")
    with pytest.raises(ComfyExportError) as err:
        to_comfy_api(g, registry)
    assert err.value.nodes == [("comp", "image.composite"), ("blur", "image.blur_mask"),
                               ("text", "primitives.save_text")]


def test_settings_comfyui_cannot_express_are_warned_about(registry) -> None:  # noqa: ANN001
    g = txt2img_graph("tiny_sd1.safetensors")
    g.set_value("ckpt", "prediction", "v")
    result = export_comfy_api(g, registry)
    assert any("prediction" in w for w in result.warnings)
    assert "prediction" not in result.prompt["ckpt"]["inputs"]
    assert not export_comfy_api(txt2img_graph("tiny_sd1.safetensors"), registry).warnings
