"""A ComfyUI SD3.5 workflow in ComfyUI's API format (built here, as ComfyUI's example workflow wires it:
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


def sd3_api_prompt(files: SD3Files) -> dict[str, Any]:
    """The workflow in ComfyUI's API format: ``{id: {"inputs", "class_type", "_meta"}}``, links ``[src, slot]``."""
    nodes = {
        "1": ("UNETLoader", {"unet_name": files.unet, "weight_dtype": "default"}),
        "2": ("TripleCLIPLoader", {"clip_name1": files.clip_l, "clip_name2": files.clip_g,
                                   "clip_name3": files.t5}),
        "3": ("VAELoader", {"vae_name": files.vae}),
        "4": ("ModelSamplingSD3", {"shift": 3.0, "model": ["1", 0]}),
        "5": ("CLIPTextEncode", {"text": PROMPT, "clip": ["2", 0]}),
        "6": ("CLIPTextEncode", {"text": "", "clip": ["2", 0]}),
        "7": ("EmptySD3LatentImage", {"width": 64, "height": 48, "batch_size": 1}),
        "8": ("KSampler", {"seed": 42, "steps": 4, "cfg": 4.5, "sampler_name": "euler", "scheduler": "simple",
                           "denoise": 1.0, "model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0],
                           "latent_image": ["7", 0]}),
        "9": ("VAEDecode", {"samples": ["8", 0], "vae": ["3", 0]}),
        "10": ("SaveImage", {"filename_prefix": "sd3", "images": ["9", 0]}),
    }
    return {k: {"inputs": v, "class_type": c, "_meta": {"title": c}} for k, (c, v) in nodes.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SD3Files:
    torch.set_num_threads(1)
    return write_sd3_files(tmp_path_factory.mktemp("comfy_sd3") / "models")


def test_comfy_sd3_workflow_validates_and_matches_native(files: SD3Files, tmp_path: Path) -> None:
    path = tmp_path / "sd3_api.json"
    path.write_text(json.dumps(sd3_api_prompt(files)))
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
