"""PNG metadata, ``open_any`` routing, missing-model reporting and the CLI entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph import WorkflowFileError, workflow
from nodegraph.cli import main
from nodegraph.comfy import load_comfy, missing_models
from nodegraph.open import open_any
from tests.comfy.helpers import FIXTURES, NO_MODELS, fixture, full_registry
from tests.diffusion.pipeline_fixtures import txt2img_graph


def _png(path: Path, **chunks: str) -> Path:
    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, pnginfo=info)
    return path


@pytest.fixture(scope="module")
def registry():  # noqa: ANN201
    return full_registry()


def test_comfyui_png_prefers_the_ui_workflow(tmp_path: Path) -> None:
    ui, api = fixture("txt2img_ui.json"), fixture("txt2img_api.json")
    png = _png(tmp_path / "ComfyUI_00001_.png", prompt=json.dumps(api), workflow=json.dumps(ui))
    result = load_comfy(png)
    assert result.source == "comfy_ui"
    assert list(result.graph.groups.values())[0].title == "Sampling"  # layout came along
    assert result.graph.node("3").ui["seed_control"] == {"seed": "randomize"}


def test_comfyui_png_with_only_a_prompt(tmp_path: Path) -> None:
    png = _png(tmp_path / "api.png", prompt=json.dumps(fixture("txt2img_api.json")))
    result = load_comfy(png)
    assert result.source == "comfy_api" and result.graph.node("3").values["seed"] == 42


def test_open_any_routes_every_kind(tmp_path: Path) -> None:
    ours = txt2img_graph("tiny_sd1.safetensors")
    ours_json = tmp_path / "ours.json"
    workflow.save(ours, ours_json)
    ours_png = _png(tmp_path / "ours.png", workflow=workflow.dumps(ours))
    comfy_png = _png(tmp_path / "comfy.png", workflow=json.dumps(fixture("all_nodes_ui.json")))

    for path in (ours_json, ours_png):
        graph, notes = open_any(path)
        assert notes == [] and set(graph.nodes) == set(ours.nodes)
    graph, notes = open_any(FIXTURES / "all_nodes_api.json")
    assert graph.node("11").type == "diffusion.ksampler"
    assert any("FaceDetailer" in n for n in notes) and graph.meta["name"] == "all_nodes_api"
    graph, notes = open_any(comfy_png)
    assert graph.node("13").type == "primitives.reroute" and notes[0].startswith("imported ComfyUI workflow")


def test_open_any_errors_name_the_file(tmp_path: Path) -> None:
    plain = _png(tmp_path / "plain.png")
    with pytest.raises(WorkflowFileError, match="plain.png.*no workflow"):
        open_any(plain)
    with pytest.raises(WorkflowFileError, match="not found"):
        open_any(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkflowFileError, match="bad.json.*not valid JSON"):
        open_any(bad)


def test_missing_models_lists_what_to_copy(tmp_path: Path, registry) -> None:  # noqa: ANN001
    graph = load_comfy(FIXTURES / "all_nodes_ui.json").graph
    settings = {**NO_MODELS, "models_dir": str(tmp_path / "models")}
    assert missing_models(graph, registry, settings) == [
        ("1", "ckpt_name", "SD1.5/tiny_sd1.safetensors"), ("2", "lora_name", "styles/ink.safetensors"),
        ("7", "control_net_name", "control_canny.safetensors"), ("12", "vae_name", "vae-ft-mse.safetensors"),
        ("20", "model_name", "upscale/4x-UltraSharp.pth"), ("39", "lora_name", "detail.safetensors")]
    # A file in our models folder (in ComfyUI's sub-folder) and one found through extra_model_paths.yaml.
    (tmp_path / "models/checkpoints/SD1.5").mkdir(parents=True)
    (tmp_path / "models/checkpoints/SD1.5/tiny_sd1.safetensors").write_bytes(b"x")
    (tmp_path / "a1111/Lora/styles").mkdir(parents=True)
    (tmp_path / "a1111/Lora/styles/ink.safetensors").write_bytes(b"x")
    (tmp_path / "extra_model_paths.yaml").write_text(f"a1111:\n  base_path: {tmp_path / 'a1111'}\n  loras: Lora\n",
                                                     encoding="utf-8")
    still = {(nid, name) for nid, _, name in missing_models(graph, registry, settings)}
    assert ("1", "SD1.5/tiny_sd1.safetensors") not in still and ("2", "styles/ink.safetensors") not in still
    assert ("39", "detail.safetensors") in still


def test_cli_validate_reports_import_notes_and_the_placeholder(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    code = main(["validate", str(FIXTURES / "all_nodes_ui.json"), "--all", "--models-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "imported ComfyUI workflow" in err and "FaceDetailer" in err
    assert "unknown node type 'comfy:FaceDetailer'" in err
    assert "ckpt_name 'SD1.5/tiny_sd1.safetensors' is not in the model folders" in err


def test_cli_export_comfy(tmp_path: Path, capsys: pytest.CaptureFixture[str], registry) -> None:  # noqa: ANN001
    out = tmp_path / "prompt.json"
    assert main(["export-comfy", str(FIXTURES / "txt2img_ui.json"), "-o", str(out)]) == 0
    prompt = json.loads(out.read_text(encoding="utf-8"))
    assert prompt["3"]["inputs"] == fixture("txt2img_api.json")["3"]["inputs"]
    assert prompt["9"]["inputs"] == {"images": ["8", 0], "filename_prefix": "ComfyUI"}

    assert main(["export-comfy", str(FIXTURES / "all_nodes_ui.json"), "-o", str(tmp_path / "x.json")]) == 2
    assert "'37' (comfy:FaceDetailer)" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
