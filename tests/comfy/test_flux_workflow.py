"""A ComfyUI FLUX workflow (``fixtures/flux_api.json`` / ``flux_ui.json``, written by
``fixtures/make_flux_fixtures.py`` in ComfyUI's node/widget layout) opens, validates, runs on tiny
FLUX split files and gives the same image as the native graph; it exports back unchanged.

The fixture holds a KSampler branch (CLIPTextEncode -> FluxGuidance, ConditioningZeroOut negative,
ModelSamplingFlux) and a custom-sampling branch (CLIPTextEncodeFlux -> BasicGuider ->
SamplerCustomAdvanced) on the same files: all three give bit-identical latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import validate
from nodegraph.comfy import load_comfy, to_comfy_api
from tests.comfy.helpers import FIXTURES, fixture, full_registry
from tests.diffusion.flux_pipeline_fixtures import FluxFiles, flux_graph, write_flux_files
from tests.diffusion.pipeline_fixtures import make_executor

PROMPT = "a small blue square on a white background"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> FluxFiles:
    torch.set_num_threads(1)
    f = write_flux_files(tmp_path_factory.mktemp("comfy_flux") / "models", guidance=True, layout="bfl")
    assert (f.unet, f.clip_l, f.t5, f.vae) == ("tiny_flux_dev_bfl.safetensors", "tiny_clip_l.safetensors",
                                               "tiny_t5xxl.safetensors", "tiny_flux_ae.safetensors")
    return f


@pytest.fixture(scope="module")
def native(files: FluxFiles, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    graph = flux_graph(files, prompt=PROMPT, seed=42, steps=4, width=64, height=48, guidance=3.5)
    report = make_executor(files.models_dir, tmp_path_factory.mktemp("native")).run(graph,
                                                                                    outputs=["sampler", "decode"])
    report.raise_for_status()
    return report.results["sampler"]["LATENT"].samples, report.results["decode"]["IMAGE"]


@pytest.mark.parametrize("name", ["flux_api.json", "flux_ui.json"])
def test_comfy_flux_workflow_validates_and_matches_native(files: FluxFiles, native: Any, name: str,
                                                          tmp_path: Path) -> None:
    imported = load_comfy(FIXTURES / name)
    assert imported.unmapped == [] and imported.warnings == []
    settings = {"models_dir": str(files.models_dir), "include_demo_models": False}
    assert validate(imported.graph, full_registry(), scope="all", settings=settings) == []
    report = make_executor(files.models_dir, tmp_path).run(imported.graph, outputs=["9", "10", "17"])
    report.raise_for_status()
    latent, image = report.results["9"]["LATENT"].samples, report.results["10"]["IMAGE"]
    assert torch.equal(latent, native[0]) and torch.equal(image, native[1])
    assert torch.equal(report.results["17"]["output"].samples, native[0])  # BasicGuider + CLIPTextEncodeFlux
    assert image.shape == (1, 48, 64, 3)


def test_comfy_flux_workflow_exports_back_to_the_same_prompt() -> None:
    original = fixture("flux_api.json")
    prompt = to_comfy_api(load_comfy(FIXTURES / "flux_api.json").graph, full_registry())
    assert {k: v["class_type"] for k, v in prompt.items()} == {k: v["class_type"] for k, v in original.items()}
    for nid, node in original.items():
        assert prompt[nid]["inputs"] == node["inputs"], nid
