"""Same checkpoint + seed + sampler settings give the same image whether the workflow was imported from
ComfyUI (API or UI format, KSampler or the custom-sampling nodes) or built natively.

A tiny random-weight SD1-like checkpoint (``tests/diffusion/pipeline_fixtures.py``), 48x32 pixels,
4 steps.  Every run uses a *fresh* executor, so nothing is served from another run's cache: the
equality is between two real computations.  Tolerance: bit-identical (``torch.equal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import Graph
from nodegraph.comfy import load_comfy
from tests.comfy.helpers import FIXTURES, fixture
from tests.diffusion.pipeline_fixtures import make_executor, make_registry, txt2img_graph, write_tiny_checkpoint
from tests.tolerance import assert_close


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("comfy_equivalence")
    ckpt = write_tiny_checkpoint(root / "models", "sd1")
    assert ckpt.name == "tiny_sd1.safetensors"  # the name the fixtures use
    return {"models": root / "models", "out": root / "out", "registry": make_registry()}


def _run(env: dict[str, Any], graph: Graph, outputs: list[str]) -> dict[str, dict[str, Any]]:
    report = make_executor(env["models"], env["out"], env["registry"]).run(graph, outputs=outputs)
    report.raise_for_status()
    assert all(r.status == "executed" for r in report.nodes.values())
    return report.results


@pytest.fixture(scope="module")
def native(env: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    results = _run(env, txt2img_graph("tiny_sd1.safetensors", seed=42, steps=4, cfg=5.0), ["sampler", "decode"])
    return results["sampler"]["LATENT"].samples, results["decode"]["IMAGE"]


@pytest.mark.parametrize("name", ["txt2img_api.json", "txt2img_ui.json"])
def test_imported_workflow_matches_native_bit_for_bit(env, native, name: str) -> None:  # noqa: ANN001
    graph = load_comfy(FIXTURES / name).graph
    results = _run(env, graph, ["3", "8"])
    latent, image = results["3"]["LATENT"].samples, results["8"]["IMAGE"]
    assert torch.equal(latent, native[0]) and torch.equal(image, native[1])
    assert image.shape == (1, 32, 48, 3) and image.std() > 0.05  # a real picture at the fixture's size


def _pair(sampler: str, scheduler: str, denoise: float, seed: int = 42) -> tuple[Graph, Graph]:
    ks = load_comfy(fixture("txt2img_api.json")).graph
    for key, value in {"sampler_name": sampler, "scheduler": scheduler, "denoise": denoise, "seed": seed}.items():
        ks.set_value("3", key, value)
    cs = load_comfy(fixture("custom_sampling_api.json")).graph
    cs.set_value("10", "noise_seed", seed)
    cs.set_value("11", "sampler_name", sampler)
    cs.set_value("12", "scheduler", scheduler)
    cs.set_value("12", "denoise", denoise)
    return ks, cs


@pytest.mark.parametrize(("sampler", "scheduler", "denoise"), [
    ("euler", "normal", 1.0),  # the plain case
    ("euler_ancestral", "karras", 1.0),  # per-step noise streams must follow the seed the same way
    ("dpmpp_sde", "exponential", 0.6),  # Brownian-tree noise, and a partial (img2img-style) schedule
])
def test_custom_sampling_equals_ksampler(env, sampler: str, scheduler: str, denoise: float) -> None:  # noqa: ANN001
    ks, cs = _pair(sampler, scheduler, denoise)
    a = _run(env, ks, ["3"])["3"]["LATENT"].samples
    b = _run(env, cs, ["13"])["13"]["output"].samples
    assert torch.equal(a, b)


def test_custom_sampling_seed_matters_and_denoised_output_is_the_last_estimate(env) -> None:  # noqa: ANN001
    _, cs42 = _pair("euler_ancestral", "normal", 1.0, seed=42)
    _, cs43 = _pair("euler_ancestral", "normal", 1.0, seed=43)
    r42 = _run(env, cs42, ["13"])["13"]
    r43 = _run(env, cs43, ["13"])["13"]
    assert (r42["output"].samples - r43["output"].samples).abs().max() > 1e-2
    # Ancestral sampling's final step lands on the x0 estimate (sigma_next = 0 adds no noise).
    # x + (x - x0) / sigma * (0 - sigma) == x0 up to a few roundings on values of |x|'s size.
    assert_close(r42["denoised_output"].samples, r42["output"].samples, depth=3)


def test_fixture_files_exist() -> None:
    for name in ("txt2img_api.json", "txt2img_ui.json", "custom_sampling_api.json"):
        assert Path(FIXTURES / name).is_file()
