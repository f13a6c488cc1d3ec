"""ComfyUI core classes mapped in issue 15: Canny (rescaled thresholds), ImageScaleToTotalPixels, Save/Load
Latent, StringReplace, PreviewAny, and Note/MarkdownNote kept as canvas comments.  Expected values are
written by hand from the fixtures."""

from __future__ import annotations

from nodegraph.comfy import export_comfy_api, load_comfy
from tests.comfy.helpers import FIXTURES, full_registry

REG = full_registry()


def test_new_rows_import_with_our_names_and_values() -> None:
    for name in ("all_nodes_ui.json", "all_nodes_api.json"):
        result = load_comfy(FIXTURES / name)
        g = result.graph
        assert g.node("55").type == "image.canny"
        assert g.node("55").values == {"low_threshold": 102, "high_threshold": 204}  # 0.4, 0.8 x 255
        assert any("Canny thresholds converted" in w for w in result.warnings)
        assert g.node("56").values == {"method": "nearest", "megapixels": 1.0, "resolution_steps": 1}
        assert g.link_into("56", "image").src == "6"
        assert g.node("57").type == "diffusion.save_latent" and g.link_into("57", "samples").src == "10"
        assert g.node("58").values == {"latent": "old.latent"}
        assert g.node("59").values == {"text": "a cat", "find": "cat", "replace": "dog"}
        assert (g.node("60").type, g.link_into("60", "value").src) == ("primitives.show", "59")


def test_notes_become_canvas_comments_without_a_warning() -> None:
    result = load_comfy(FIXTURES / "all_nodes_ui.json")
    notes = result.graph.meta["notes"]
    assert [(n["id"], n["markdown"]) for n in notes] == [("38", False), ("61", True)]
    assert notes[1]["text"].startswith("# Read me") and notes[1]["pos"] == [1100.0, 2000.0]
    assert not any("note" in w.lower() for w in result.warnings)


def test_new_rows_export_back_to_comfyui_values() -> None:
    g = load_comfy(FIXTURES / "all_nodes_api.json").graph
    keep = {"6", "10", "55", "56", "57", "58", "59", "60"}
    for nid in [n for n in g.nodes if n not in keep]:
        g.remove_node(nid)
    prompt = export_comfy_api(g, REG).prompt
    assert prompt["55"]["class_type"] == "Canny"
    assert prompt["55"]["inputs"] == {"image": ["6", 0], "low_threshold": 0.4, "high_threshold": 0.8}
    assert prompt["56"]["inputs"]["upscale_method"] == "nearest-exact"
    assert prompt["59"]["inputs"] == {"string": "a cat", "find": "cat", "replace": "dog"}
    assert prompt["60"] == {"inputs": {"source": ["59", 0]}, "class_type": "PreviewAny",
                            "_meta": {"title": "Preview Any"}}
