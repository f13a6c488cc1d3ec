"""ComfyUI-GGUF's loader classes (``fixtures/gguf_api.json`` / ``gguf_ui.json``, written by
``make_gguf_fixtures.py``) import as our loaders, which read ``.gguf`` files themselves, and export back
as ComfyUI's core loaders (the GGUF rows come after the core ones)."""

from __future__ import annotations

import pytest

from nodegraph.comfy import load_comfy
from tests.comfy.helpers import FIXTURES, fixture

OURS = {"UnetLoaderGGUF": "diffusion.unet_loader", "CLIPLoaderGGUF": "diffusion.clip_loader",
        "DualCLIPLoaderGGUF": "diffusion.dual_clip_loader", "TripleCLIPLoaderGGUF": "diffusion.triple_clip_loader"}


@pytest.mark.parametrize("name", ["gguf_api.json", "gguf_ui.json"])
def test_gguf_loader_classes_import_as_our_loaders(name: str) -> None:
    imported = load_comfy(FIXTURES / name)
    assert imported.unmapped == []
    g = imported.graph
    assert g.node("1").type == OURS["UnetLoaderGGUF"]
    assert g.node("1").values["unet_name"] == "flux1-dev-Q4_K.gguf"
    assert g.node("1").values.get("weight_dtype", "default") == "default"  # UnetLoaderGGUF has no such widget
    assert g.node("2").type == OURS["DualCLIPLoaderGGUF"]
    assert g.node("2").values == {"clip_name1": "clip_l.safetensors", "clip_name2": "t5-v1_1-xxl-encoder-Q8_0.gguf",
                                  "type": "flux"}
    assert (g.node("9").type, g.node("9").values["type"]) == (OURS["CLIPLoaderGGUF"], "sd3")
    assert g.node("10").type == OURS["TripleCLIPLoaderGGUF"]
    assert g.node("10").values["clip_name3"] == "t5-v1_1-xxl-encoder-Q8_0.gguf"
    lk = g.link_into("6", "model")
    assert (lk.src, lk.src_output) == ("1", "MODEL")


def test_export_writes_the_core_loader_classes() -> None:
    from nodegraph.comfy import to_comfy_api
    from tests.comfy.helpers import full_registry

    prompt = to_comfy_api(load_comfy(FIXTURES / "gguf_api.json").graph, full_registry())
    classes = {nid: n["class_type"] for nid, n in prompt.items()}
    assert classes["1"] == "UNETLoader" and classes["2"] == "DualCLIPLoader" and classes["10"] == "TripleCLIPLoader"
    assert prompt["1"]["inputs"]["unet_name"] == fixture("gguf_api.json")["1"]["inputs"]["unet_name"]
