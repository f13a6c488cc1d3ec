"""The sampler/scheduler catalogue is the one place a sampler is declared: everything reads it,
and what it says about each sampler (does it draw noise?) is what the sampler does."""

from __future__ import annotations

import pytest
import torch

from nodegraph import Registry
from nodegraph.comfy import load_comfy
from nodes.diffusion import catalogue
from nodes.diffusion.pack import register as diffusion
from nodes.diffusion.sampling import SAMPLERS, SCHEDULERS, make_schedule


def test_library_nodes_and_comfy_mapping_read_the_catalogue() -> None:
    assert list(SAMPLERS) == list(catalogue.SAMPLER_NAMES)
    assert list(SCHEDULERS) == list(catalogue.SCHEDULER_NAMES)
    reg = Registry()
    reg.load_pack(diffusion)
    for type_id in ("diffusion.ksampler", "diffusion.ksampler_advanced", "diffusion.sampler_select"):
        assert reg[type_id].input("sampler_name").choices == list(catalogue.SAMPLER_NAMES), type_id
    for type_id in ("diffusion.ksampler", "diffusion.ksampler_advanced", "diffusion.basic_scheduler"):
        assert reg[type_id].input("scheduler").choices == list(catalogue.SCHEDULER_NAMES), type_id
    # ComfyUI's *_gpu variants come from the rows' comfy_variants.
    doc = {"1": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m_sde_gpu"}}}
    result = load_comfy(doc, reg)
    assert result.graph.node("1").values["sampler_name"] == "dpmpp_2m_sde"
    assert any("dpmpp_2m_sde_gpu" in w for w in result.warnings)


def test_a_row_without_a_function_fails_naming_it() -> None:
    with pytest.raises(ImportError, match=r"\['made_up'\]"):
        catalogue.functions_for(("euler", "made_up"), {"euler": lambda: None}, "sampler")


@pytest.mark.parametrize("info", catalogue.SAMPLERS, ids=lambda i: i.name)
def test_noise_kind_matches_what_the_sampler_does(info: catalogue.SamplerInfo) -> None:
    """Same start, two different noise streams: only the samplers the catalogue calls stochastic differ."""
    schedule = make_schedule()
    sigmas = SCHEDULERS["karras"](schedule, 6)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # a smooth x0 prediction
        return torch.tanh(x / (1 + sigma.view(-1, 1, 1, 1) ** 2) ** 0.5)

    def noise(seed: int):  # noqa: ANN202
        g = torch.Generator().manual_seed(seed)
        return lambda sigma, sigma_next: torch.randn(x.shape, generator=g)

    a = SAMPLERS[info.name](denoiser, x.clone(), sigmas, noise_sampler=noise(1))
    b = SAMPLERS[info.name](denoiser, x.clone(), sigmas, noise_sampler=noise(2))
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) == (info.noise == "none"), info
