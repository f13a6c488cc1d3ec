"""A ComfyUI SD3.5 workflow in ComfyUI's API and UI formats (built here, as ComfyUI's example workflow wires it:
UNETLoader + TripleCLIPLoader + VAELoader, ModelSamplingSD3, CLIPTextEncode x2, EmptySD3LatentImage,
KSampler, VAEDecode, SaveImage) opens without warnings, validates, runs on tiny SD3 split files with
the same latents and image as the native graph, and exports back to the same prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import validate
from nodegraph.comfy import load_comfy, to_comfy_api
from tests.comfy.helpers import full_registry
from tests.diffusion.pipeline_fixtures import make_executor
from tests.diffusion.sd3_pipeline_fixtures import SD3Files, sd3_graph, write_sd3_files

pytest.importorskip("diffusers")
PROMPT = "a small blue square on a white background"


C, L, M = "CONDITIONING", "LATENT", "MODEL"


def sd3_nodes(files: SD3Files) -> dict[int, tuple[str, list[tuple[str, Any]], dict[str, tuple[int, int, str]],
                                                   list[tuple[str, str]]]]:
    """id -> (class, widgets in ComfyUI's declaration order, link inputs {name: (src, slot, type)}, outputs)."""
    return {
        1: ("UNETLoader", [("unet_name", files.unet), ("weight_dtype", "default")], {}, [(M, M)]),
        2: ("TripleCLIPLoader", [("clip_name1", files.clip_l), ("clip_name2", files.clip_g),
                                 ("clip_name3", files.t5)], {}, [("CLIP", "CLIP")]),
        3: ("VAELoader", [("vae_name", files.vae)], {}, [("VAE", "VAE")]),
        4: ("ModelSamplingSD3", [("shift", 3.0)], {"model": (1, 0, M)}, [(M, M)]),
        5: ("CLIPTextEncode", [("text", PROMPT)], {"clip": (2, 0, "CLIP")}, [(C, C)]),
        6: ("CLIPTextEncode", [("text", "")], {"clip": (2, 0, "CLIP")}, [(C, C)]),
        7: ("EmptySD3LatentImage", [("width", 64), ("height", 48), ("batch_size", 1)], {}, [(L, L)]),
        8: ("KSampler", [("seed", 42), ("steps", 4), ("cfg", 4.5), ("sampler_name", "euler"),
                         ("scheduler", "simple"), ("denoise", 1.0)],
            {"model": (4, 0, M), "positive": (5, 0, C), "negative": (6, 0, C), "latent_image": (7, 0, L)},
            [(L, L)]),
        9: ("VAEDecode", [], {"samples": (8, 0, L), "vae": (3, 0, "VAE")}, [("IMAGE", "IMAGE")]),
        10: ("SaveImage", [("filename_prefix", "sd3")], {"images": (9, 0, "IMAGE")}, []),
    }


def sd3_api_prompt(files: SD3Files) -> dict[str, Any]:
    """The workflow in ComfyUI's API format: ``{id: {"inputs", "class_type", "_meta"}}``, links ``[src, slot]``."""
    doc = {}
    for nid, (cls, widgets, links, _) in sd3_nodes(files).items():
        inputs: dict[str, Any] = dict(widgets)
        inputs.update({name: [str(src), slot] for name, (src, slot, _) in links.items()})
        doc[str(nid)] = {"inputs": inputs, "class_type": cls, "_meta": {"title": cls}}
    return doc


def sd3_ui_doc(files: SD3Files, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The same workflow in ComfyUI's UI (LiteGraph) layout, by the FLUX fixture's writer."""
    from tests.comfy.fixtures import make_flux_fixtures

    monkeypatch.setattr(make_flux_fixtures, "NODES", sd3_nodes(files))
    return make_flux_fixtures.ui_doc()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SD3Files:
    torch.set_num_threads(1)
    return write_sd3_files(tmp_path_factory.mktemp("comfy_sd3") / "models")


@pytest.mark.parametrize("layout", ["api", "ui"])
def test_comfy_sd3_workflow_validates_and_matches_native(layout: str, files: SD3Files, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"sd3_{layout}.json"
    doc = sd3_api_prompt(files) if layout == "api" else sd3_ui_doc(files, monkeypatch)
    path.write_text(json.dumps(doc))
    imported = load_comfy(path)
    assert imported.unmapped == [] and imported.warnings == []
    settings = {"models_dir": str(files.models_dir), "include_demo_models": False}
    assert validate(imported.graph, full_registry(), scope="all", settings=settings) == []
    executor = make_executor(files.models_dir, tmp_path / "out")
    report = executor.run(imported.graph, outputs=["8", "9"])
    report.raise_for_status()
    native = executor.run(sd3_graph(files, prompt=PROMPT, steps=4, cfg=4.5), outputs=["sampler", "decode"])
    native.raise_for_status()
    assert torch.equal(report.results["8"]["LATENT"].samples, native.results["sampler"]["LATENT"].samples)
    assert torch.equal(report.results["9"]["IMAGE"], native.results["decode"]["IMAGE"])


def test_comfy_sd3_workflow_exports_back_to_the_same_prompt(files: SD3Files, tmp_path: Path) -> None:
    original = sd3_api_prompt(files)
    path = tmp_path / "sd3_api.json"
    path.write_text(json.dumps(original))
    prompt = to_comfy_api(load_comfy(path).graph, full_registry())
    assert {k: v["class_type"] for k, v in prompt.items()} == {k: v["class_type"] for k, v in original.items()}
    for nid, node in original.items():
        assert prompt[nid]["inputs"] == node["inputs"], nid


def test_clip_loader_type_sd3_imports() -> None:
    prompt = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "sd3",
                                                           "device": "default"}}}
    imported = load_comfy(prompt)
    assert imported.unmapped == [] and imported.warnings == []
    node = imported.graph.nodes["1"]
    assert node.type == "diffusion.clip_loader" and node.values["type"] == "sd3"
