"""A ComfyUI Z-Image workflow in ComfyUI's API and UI formats (built here, wired as ComfyUI's official
Z-Image-Turbo template: UNETLoader + CLIPLoader type lumina2 + VAELoader, ModelSamplingAuraFlow,
CLIPTextEncode, ConditioningZeroOut as the negative, EmptySD3LatentImage, KSampler with res_multistep,
VAEDecode, SaveImage) opens without warnings, validates, runs on tiny Z-Image split files with the
same latents and image as the native graph, and exports back to the same prompt."""

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
from tests.diffusion.zimage_pipeline_fixtures import ZImageFiles, write_zimage_files, zimage_graph

pytest.importorskip("diffusers")
PROMPT = "a small blue square on a white background"
C, L, M = "CONDITIONING", "LATENT", "MODEL"


def zimage_nodes(files: ZImageFiles) -> dict[int, tuple[str, list[tuple[str, Any]], dict[str, tuple[int, int, str]],
                                                         list[tuple[str, str]]]]:
    """id -> (class, widgets in ComfyUI's declaration order, link inputs {name: (src, slot, type)}, outputs)."""
    return {
        1: ("UNETLoader", [("unet_name", files.unet), ("weight_dtype", "default")], {}, [(M, M)]),
        2: ("CLIPLoader", [("clip_name", files.qwen3), ("type", "lumina2"), ("device", "default")], {},
            [("CLIP", "CLIP")]),
        3: ("VAELoader", [("vae_name", files.vae)], {}, [("VAE", "VAE")]),
        4: ("ModelSamplingAuraFlow", [("shift", 3.0)], {"model": (1, 0, M)}, [(M, M)]),
        5: ("CLIPTextEncode", [("text", PROMPT)], {"clip": (2, 0, "CLIP")}, [(C, C)]),
        6: ("ConditioningZeroOut", [], {"conditioning": (5, 0, C)}, [(C, C)]),
        7: ("EmptySD3LatentImage", [("width", 64), ("height", 48), ("batch_size", 1)], {}, [(L, L)]),
        8: ("KSampler", [("seed", 42), ("steps", 4), ("cfg", 1.0), ("sampler_name", "res_multistep"),
                         ("scheduler", "simple"), ("denoise", 1.0)],
            {"model": (4, 0, M), "positive": (5, 0, C), "negative": (6, 0, C), "latent_image": (7, 0, L)},
            [(L, L)]),
        9: ("VAEDecode", [], {"samples": (8, 0, L), "vae": (3, 0, "VAE")}, [("IMAGE", "IMAGE")]),
        10: ("SaveImage", [("filename_prefix", "z-image")], {"images": (9, 0, "IMAGE")}, []),
    }


def zimage_api_prompt(files: ZImageFiles) -> dict[str, Any]:
    from tests.comfy.fixtures import make_flux_fixtures

    return make_flux_fixtures.api_doc(zimage_nodes(files))


def zimage_ui_doc(files: ZImageFiles) -> dict[str, Any]:
    from tests.comfy.fixtures import make_flux_fixtures

    return make_flux_fixtures.ui_doc(zimage_nodes(files))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ZImageFiles:
    torch.set_num_threads(1)
    return write_zimage_files(tmp_path_factory.mktemp("comfy_zimage") / "models")


@pytest.mark.parametrize("layout", ["api", "ui"])
def test_comfy_zimage_workflow_validates_and_matches_native(layout: str, files: ZImageFiles, tmp_path: Path) -> None:
    path = tmp_path / f"zimage_{layout}.json"
    path.write_text(json.dumps(zimage_api_prompt(files) if layout == "api" else zimage_ui_doc(files)))
    imported = load_comfy(path)
    assert imported.unmapped == [] and imported.warnings == []
    assert imported.graph.nodes["4"].type == "diffusion.model_sampling_aura_flow"
    assert imported.graph.nodes["2"].values["type"] == "lumina2"
    settings = {"models_dir": str(files.models_dir), "include_demo_models": False}
    assert validate(imported.graph, full_registry(), scope="all", settings=settings) == []
    executor = make_executor(files.models_dir, tmp_path / "out")
    report = executor.run(imported.graph, outputs=["8", "9"])
    report.raise_for_status()
    native = executor.run(zimage_graph(files, prompt=PROMPT, steps=4, cfg=1.0), outputs=["sampler", "decode"])
    native.raise_for_status()
    assert torch.equal(report.results["8"]["LATENT"].samples, native.results["sampler"]["LATENT"].samples)
    assert torch.equal(report.results["9"]["IMAGE"], native.results["decode"]["IMAGE"])
    assert float(report.results["8"]["LATENT"].samples.std()) > 0.1


def test_comfy_zimage_workflow_exports_back_to_the_same_prompt(files: ZImageFiles, tmp_path: Path) -> None:
    original = zimage_api_prompt(files)
    path = tmp_path / "zimage_api.json"
    path.write_text(json.dumps(original))
    prompt = to_comfy_api(load_comfy(path).graph, full_registry())
    assert {k: v["class_type"] for k, v in prompt.items()} == {k: v["class_type"] for k, v in original.items()}
    for nid, node in original.items():
        assert prompt[nid]["inputs"] == node["inputs"], nid


def test_model_sampling_aura_flow_default_is_comfyuis() -> None:
    """ComfyUI's ModelSamplingAuraFlow defaults to shift 1.73 (AuraFlow's); a prompt that omits it gets that."""
    imported = load_comfy({"1": {"class_type": "ModelSamplingAuraFlow", "inputs": {"shift": 1.73, "model": ["2", 0]}},
                           "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "z.safetensors",
                                                                        "weight_dtype": "default"}}})
    assert imported.unmapped == [] and imported.warnings == []
    node = imported.graph.nodes["1"]
    assert node.type == "diffusion.model_sampling_aura_flow" and node.values["shift"] == 1.73
    spec = full_registry().get("diffusion.model_sampling_aura_flow")
    assert next(i for i in spec.inputs if i.name == "shift").default == 1.73
