"""Importing ComfyUI's UI-format workflow (``fixtures/all_nodes_ui.json``: every mapped class, plus a
reroute, a PrimitiveNode, a note, a muted and a bypassed node, groups, titles, colours, and one custom
node we do not have).  Expected values below are written from the fixture by hand, not derived from
the mapping table, so a wrong widget position or name fails here."""

from __future__ import annotations

import pytest

from nodegraph import validate, workflow
from nodegraph.comfy import BY_COMFY, load_comfy
from nodegraph.comfy.result import ComfyFormatError
from tests.comfy.helpers import FIXTURES, NO_MODELS, fixture, full_registry


@pytest.fixture(scope="module")
def imported():  # noqa: ANN201
    return load_comfy(FIXTURES / "all_nodes_ui.json")


@pytest.fixture(scope="module")
def registry():  # noqa: ANN201
    return full_registry()


def test_every_mapped_class_becomes_its_node_type(imported) -> None:  # noqa: ANN001
    doc = fixture("all_nodes_ui.json")
    classes = {n["type"] for n in doc["nodes"]} | {n["type"] for n in fixture("flux_ui.json")["nodes"]}
    classes |= {n["type"] for n in fixture("conditioning_ui.json")["nodes"]}
    classes |= {n["type"] for n in fixture("inpaint_ui.json")["nodes"]}  # test_inpaint_models.py
    classes |= {n["type"] for n in fixture("refiner_ui.json")["nodes"]}  # SDXL refiner: test_sdxl_refiner.py
    classes |= {"TripleCLIPLoader", "ModelSamplingSD3"}  # built in ComfyUI's UI layout by test_sd3_workflow.py
    classes |= {n["type"] for n in fixture("gguf_ui.json")["nodes"]}  # ComfyUI-GGUF's loaders: test_gguf_workflow.py
    classes.add("ModelSamplingAuraFlow")  # built in ComfyUI's UI layout by test_zimage_workflow.py
    assert set(BY_COMFY) <= classes, ("the fixtures must cover every mapped class (FLUX ones: flux_ui.json, "
                                      "Conditioning* ones: conditioning_ui.json, GGUF loaders: gguf_ui.json, "
                                      "inpainting ones: inpaint_ui.json)")
    for n in doc["nodes"]:
        if n["type"] in BY_COMFY:
            assert imported.graph.node(str(n["id"])).type == BY_COMFY[n["type"]].ours


def test_imported_graph_validates_except_for_missing_files_and_the_placeholder(imported, registry) -> None:  # noqa: ANN001
    """Names and types line up with the real node specs: validating every node reports only model/image
    files that are not on this machine and the one unmapped custom node -- no unknown input, type
    mismatch, missing link or bad value anywhere."""
    issues = validate(imported.graph, registry, scope="all", settings={**NO_MODELS, "models_dir": "/nonexistent",
                                                                       "input_dir": "/nonexistent"})
    kinds = {(i.node_id, i.kind, i.input) for i in issues}
    assert kinds == {
        ("1", "not_in_choices", "ckpt_name"), ("2", "not_in_choices", "lora_name"),
        ("6", "not_in_choices", "image"), ("7", "not_in_choices", "control_net_name"),
        ("12", "not_in_choices", "vae_name"), ("20", "not_in_choices", "model_name"),
        ("39", "not_in_choices", "lora_name"), ("37", "unknown_type", None), ("58", "not_in_choices", "latent"),
    }
    placeholder = next(i for i in issues if i.kind == "unknown_type")
    assert "FaceDetailer" in placeholder.message


def test_positional_widget_values_and_seed_control(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert g.node("11").values == {"seed": 156680208700286, "steps": 20, "cfg": 7.5, "sampler_name": "dpmpp_2m_sde",
                                   "scheduler": "karras", "denoise": 1}
    assert g.node("11").ui["seed_control"] == {"seed": "randomize"}
    assert any("dpmpp_2m_sde_gpu" in w for w in imported.warnings)  # the approximation is reported
    assert g.node("17").values == {"add_noise": "enable", "noise_seed": 1234, "steps": 20, "cfg": 8,
                                   "sampler_name": "euler", "scheduler": "normal", "start_at_step": 10,
                                   "end_at_step": 10000, "return_with_leftover_noise": "disable"}
    assert g.node("31").values == {"noise_seed": 99} and g.node("31").ui["seed_control"] == {"noise_seed": "randomize"}
    assert g.node("33").values == {"scheduler": "karras", "steps": 12, "denoise": 0.6}
    assert g.node("34").values == {"cfg": 6.5}
    assert g.node("32").values == {"sampler_name": "euler_ancestral"}
    assert g.node("2").values == {"lora_name": "styles/ink.safetensors", "strength_model": 0.8, "strength_clip": 0.6}
    assert g.node("3").values == {"stop_at_clip_layer": -2}
    assert g.node("8").values == {"strength": 0.9, "start_percent": 0.0, "end_percent": 0.8}
    assert g.node("10").values == {"width": 512, "height": 768, "batch_size": 1}
    assert g.node("16").values == {"upscale_method": "nearest-exact", "width": 1024, "height": 1536, "crop": "disabled"}
    assert g.node("18").values == {"upscale_method": "bilinear", "scale_by": 1.5}
    assert g.node("22").values == {"method": "nearest", "width": 1024, "height": 1024, "crop": "center"}
    assert g.node("23").values == {"method": "lanczos", "factor": 0.5}
    assert g.node("25").values == {"left": 64, "top": 0, "right": 64, "bottom": 0, "feathering": 40}
    assert g.node("26").values == {"grow_mask_by": 6}
    assert g.node("6").values == {"image": "photo.png"}  # the upload button's value is not an input
    assert g.node("15").values == {"filename_prefix": "fox/ComfyUI"}
    assert g.node("40").values == {"tile_size": 256, "overlap": 32}  # video-only temporal widgets dropped
    assert g.node("48").values == {"expand": 4, "tapered_corners": False}
    assert g.node("49").values == {"value": 5} and g.node("52").values == {"value": "line one\nline two"}


def test_model_names_use_forward_slashes(imported) -> None:  # noqa: ANN001
    assert imported.graph.node("1").values["ckpt_name"] == "SD1.5/tiny_sd1.safetensors"
    assert imported.graph.node("20").values["model_name"] == "upscale/4x-UltraSharp.pth"


def test_links_map_to_our_port_names(imported) -> None:  # noqa: ANN001
    g = imported.graph

    def src(dst: str, inp: str) -> tuple[str, str]:
        lk = g.link_into(dst, inp)
        assert lk is not None, f"{dst}.{inp} is not linked"
        return lk.src, lk.src_output

    assert src("2", "clip") == ("1", "CLIP")
    assert src("11", "negative") == ("8", "negative")  # second output of ControlNetApplyAdvanced
    assert src("35", "sigmas") == ("33", "SIGMAS") and src("35", "latent_image") == ("28", "LATENT")
    assert src("40", "samples") == ("35", "denoised_output")
    assert src("26", "mask") == ("25", "MASK") and src("28", "mask") == ("6", "MASK")
    assert src("54", "width") == ("49", "INT")  # a widget converted to an input, fed by a real node
    assert g.link_into("8", "vae") is None  # ControlNetApplyAdvanced's optional vae has no equivalent...
    assert any("'vae'" in w and "'8'" in w for w in imported.warnings)  # ...and that is reported


def test_reroute_and_primitive_node(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert g.node("13").type == "primitives.reroute"
    assert (g.link_into("13", "input").src, g.link_into("13", "input").src_output) == ("12", "VAE")
    assert (g.link_into("14", "vae").src, g.link_into("14", "vae").src_output) == ("13", "output")
    # The frontend-only PrimitiveNode is folded into the widget it drove (value and seed control).
    assert "30" not in g
    assert g.link_into("17", "noise_seed") is None
    assert g.node("17").values["noise_seed"] == 1234
    assert g.node("17").ui["seed_control"] == {"noise_seed": "fixed"}


def test_modes_layout_titles_and_groups(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert g.node("9").mode == "bypass" and g.node("24").mode == "mute" and g.node("11").mode == "normal"
    assert g.node("1").ui["pos"] == [40.0, 40.0] and g.node("1").ui["size"] == [315.0, 98.0]
    assert g.node("4").title == "Positive" and g.node("4").ui["color"] == "#232"
    assert g.node("15").title == "Final image"
    assert g.node("14").ui.get("collapsed") is True
    assert g.node("11").title is None
    groups = sorted(g.groups.values(), key=lambda gr: gr.title)
    assert [(gr.title, gr.bounds, gr.color) for gr in groups] == [
        ("Load models", (20.0, -20.0, 1100.0, 420.0), "#3f789e"), ("Upscale", (2500.0, 600.0, 1500.0, 400.0), "#8A8")]
    assert g.meta["notes"][0]["text"] == "Remember to copy the LoRA first."


def test_empty_latent_gets_the_only_checkpoints_vae(imported) -> None:  # noqa: ANN001
    lk = imported.graph.link_into("10", "vae")
    assert (lk.src, lk.src_output) == ("1", "VAE")


def test_unmapped_node_is_kept_as_a_visible_placeholder(imported) -> None:  # noqa: ANN001
    g = imported.graph
    assert imported.unmapped == [("37", "FaceDetailer")]
    node = g.node("37")
    assert node.type == "comfy:FaceDetailer"
    assert node.extra["comfy"]["widgets_values"] == [512, True, 768, 42, "fixed", 20]  # nothing is lost
    assert (g.link_into("37", "image").src, g.link_into("37", "model").src) == ("19", "2")
    out = g.link_into("44", "image2")
    assert (out.src, out.src_output) == ("37", "IMAGE")
    assert any("FaceDetailer" in line for line in imported.notes())


def test_placeholder_blocks_a_run_that_needs_it_naming_the_class(imported, registry) -> None:  # noqa: ANN001
    issues = validate(imported.graph, registry, targets=["45"], settings=NO_MODELS)
    unknown = [i for i in issues if i.kind == "unknown_type"]
    assert len(unknown) == 1 and unknown[0].node_id == "37" and "comfy:FaceDetailer" in unknown[0].message


def test_imported_graph_survives_our_file_format(imported) -> None:  # noqa: ANN001
    again = workflow.loads(workflow.dumps(imported.graph))
    assert again.node("37").extra["comfy"]["type"] == "FaceDetailer"
    assert again.node("11").ui["seed_control"] == {"seed": "randomize"}
    assert {(lk.src, lk.src_output, lk.dst, lk.dst_input) for lk in again.links} == {
        (lk.src, lk.src_output, lk.dst, lk.dst_input) for lk in imported.graph.links}


def test_newer_link_objects_and_dict_positions() -> None:
    doc = fixture("txt2img_ui.json")
    doc["links"] = [{"id": lk[0], "origin_id": lk[1], "origin_slot": lk[2], "target_id": lk[3],
                     "target_slot": lk[4], "type": lk[5]} for lk in doc["links"]]
    doc["nodes"][0]["pos"] = {"0": 10, "1": 20}
    g = load_comfy(doc).graph
    assert len(g.links) == 10  # 9 from the file + the empty latent's VAE
    assert g.node("7").ui["pos"] == [10.0, 20.0]


def test_widgets_saved_by_name_are_read_by_name() -> None:
    doc = fixture("txt2img_ui.json")
    ks = next(n for n in doc["nodes"] if n["type"] == "KSampler")
    ks["widgets_values"] = {"seed": 7, "control_after_generate": "increment", "steps": 3, "cfg": 2.5,
                            "sampler_name": "heun", "scheduler": "karras", "denoise": 0.5}
    node = load_comfy(doc).graph.node("3")
    assert node.values == {"seed": 7, "steps": 3, "cfg": 2.5, "sampler_name": "heun", "scheduler": "karras",
                           "denoise": 0.5}
    assert node.ui["seed_control"] == {"seed": "increment"}


def test_malformed_documents_raise_a_format_error() -> None:
    with pytest.raises(ComfyFormatError, match="not a ComfyUI workflow"):
        load_comfy({"hello": 1})
    doc = fixture("txt2img_ui.json")
    doc["links"] = [[1, 4]]
    with pytest.raises(ComfyFormatError, match="link #0"):
        load_comfy(doc)
