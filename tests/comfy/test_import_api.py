"""Importing ComfyUI's API format (``fixtures/all_nodes_api.json``: every mapped class and one custom
node we do not have), and telling the formats apart."""

from __future__ import annotations

import pytest

from nodegraph import validate
from nodegraph.comfy import BY_COMFY, detect, is_comfy, load_comfy
from nodegraph.comfy.result import ComfyFormatError
from tests.comfy.helpers import FIXTURES, NO_MODELS, fixture, full_registry


@pytest.fixture(scope="module")
def imported():  # noqa: ANN201
    return load_comfy(FIXTURES / "all_nodes_api.json")


def test_every_mapped_class_becomes_its_node_type(imported) -> None:  # noqa: ANN001
    doc = fixture("all_nodes_api.json")
    flux = {n["class_type"] for n in fixture("flux_api.json").values()}  # FLUX classes: test_flux_workflow.py
    # Conditioning* classes: tests/diffusion/test_conditioning_lists.py
    cond = {n["class_type"] for n in fixture("conditioning_api.json").values()}
    cond |= {n["class_type"] for n in fixture("inpaint_api.json").values()}  # test_inpaint_models.py
    sd3 = {"TripleCLIPLoader", "ModelSamplingSD3"}  # SD3 classes: test_sd3_workflow.py builds their workflow
    sd3.add("ModelSamplingAuraFlow")  # Z-Image: test_zimage_workflow.py builds its workflow
    gguf = {n["class_type"] for n in fixture("gguf_api.json").values()}  # ComfyUI-GGUF: test_gguf_workflow.py
    refiner = {n["class_type"] for n in fixture("refiner_api.json").values()}  # SDXL refiner: test_sdxl_refiner.py
    assert set(BY_COMFY) <= {n["class_type"] for n in doc.values()} | flux | cond | sd3 | gguf | refiner
    for nid, n in doc.items():
        if n["class_type"] in BY_COMFY:
            assert imported.graph.node(nid).type == BY_COMFY[n["class_type"]].ours
    assert imported.source == "comfy_api"


def test_validates_except_for_missing_files_and_the_placeholder(imported) -> None:  # noqa: ANN001
    issues = validate(imported.graph, full_registry(), scope="all",
                      settings={**NO_MODELS, "models_dir": "/nonexistent", "input_dir": "/nonexistent"})
    assert {(i.node_id, i.kind) for i in issues} == {
        ("1", "not_in_choices"), ("2", "not_in_choices"), ("6", "not_in_choices"), ("7", "not_in_choices"),
        ("12", "not_in_choices"), ("20", "not_in_choices"), ("39", "not_in_choices"), ("37", "unknown_type"),
        ("58", "not_in_choices")}


def test_named_inputs_and_links(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert g.node("11").values == {"seed": 156680208700286, "steps": 20, "cfg": 7.5, "sampler_name": "dpmpp_2m",
                                   "scheduler": "karras", "denoise": 1.0}
    assert g.node("17").values["noise_seed"] == 1234 and g.node("17").values["start_at_step"] == 10
    assert g.node("6").values == {"image": "photo.png"}  # "[input]" annotation and upload widget dropped
    assert g.node("22").values["method"] == "nearest" and g.node("23").values == {"method": "lanczos", "factor": 0.5}
    assert g.node("41").values == {"tile_size": 256, "overlap": 32}
    assert g.node("1").values["ckpt_name"] == "SD1.5/tiny_sd1.safetensors"
    lk = g.link_into("54", "width")
    assert (lk.src, lk.src_output) == ("49", "INT") and "width" not in g.node("54").values
    lk = g.link_into("11", "negative")
    assert (lk.src, lk.src_output) == ("8", "negative")
    assert g.link_into("8", "vae") is None
    lk = g.link_into("10", "vae")  # the only checkpoint's VAE sizes the empty latent
    assert (lk.src, lk.src_output) == ("1", "VAE")
    assert g.node("15").title == "Final image"


def test_placeholder_keeps_values_and_links(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert imported.unmapped == [("37", "FaceDetailer")]
    node = g.node("37")
    assert node.type == "comfy:FaceDetailer"
    assert node.values == {"guide_size": 512, "guide_size_for": True, "max_size": 768, "seed": 42, "steps": 20}
    assert node.extra["comfy"]["class_type"] == "FaceDetailer"
    lk = g.link_into("44", "image2")
    assert (lk.src, lk.src_output) == ("37", "0")  # API outputs are known by index only


def test_layout_goes_left_to_right_along_links(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert all("pos" in n.ui for n in g)
    for lk in g.links:
        assert g.node(lk.dst).ui["pos"][0] > g.node(lk.src).ui["pos"][0], lk
    positions = [tuple(n.ui["pos"]) for n in g]
    assert len(set(positions)) == len(positions)  # no two nodes on top of each other


def test_wrapped_prompt_body_is_accepted() -> None:
    g = load_comfy({"prompt": fixture("txt2img_api.json"), "client_id": "abc"}).graph
    assert g.node("3").type == "diffusion.ksampler" and len(g) == 7


def test_unknown_input_of_a_mapped_node_is_reported() -> None:
    doc = fixture("txt2img_api.json")
    doc["3"]["inputs"]["sigma_shift"] = 1.5
    result = load_comfy(doc)
    assert "sigma_shift" not in result.graph.node("3").values
    assert any("sigma_shift" in w for w in result.warnings)


def test_link_to_a_missing_node_is_a_warning_not_a_crash() -> None:
    doc = fixture("txt2img_api.json")
    doc["3"]["inputs"]["model"] = ["99", 0]  # not a node id: kept as a (bad) constant, validation reports it
    result = load_comfy(doc)
    assert result.graph.link_into("3", "model") is None
    issues = validate(result.graph, full_registry(), targets=["3"], settings=NO_MODELS)
    assert any(i.node_id == "3" and i.input == "model" for i in issues)


@pytest.mark.parametrize(("doc", "kind"), [
    ({"format": "nodegraph.workflow", "version": 1, "nodes": {}}, "nodegraph"),
    ({"nodes": {"a": {"type": "primitives.int"}}}, "nodegraph"),
    ({"nodes": [{"id": 1, "type": "KSampler"}], "links": []}, "comfy_ui"),
    ({"3": {"class_type": "KSampler", "inputs": {}}}, "comfy_api"),
    ({"prompt": {"3": {"class_type": "KSampler", "inputs": {}}}}, "comfy_api"),
    ({"3": {"class_type": "KSampler"}, "4": {"inputs": {}}}, None),
    ({}, None), ([1, 2], None), ("text", None),
])
def test_detect(doc, kind) -> None:  # noqa: ANN001
    assert detect(doc) == kind
    assert is_comfy(doc) == (kind in ("comfy_ui", "comfy_api"))


def test_not_a_prompt_raises() -> None:
    with pytest.raises(ComfyFormatError):
        load_comfy({"3": {"class_type": "KSampler", "inputs": "oops"}})
    with pytest.raises(ComfyFormatError, match="not valid JSON"):
        load_comfy(FIXTURES.parent / "helpers.py")
