"""Conditioning lists (issue 16): entries with areas, masks, strength and timestep windows, evaluated on
the tiny SD1 checkpoint and the tiny FLUX transformer of the pipeline fixtures, against hand-computed
combinations of single-entry model calls (ComfyUI's calc_cond_batch rule)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph.comfy import export_comfy_api, load_comfy
from nodegraph.errors import NodeInputError
from nodes.diffusion.checkpoint import load_checkpoint
from nodes.diffusion.pack import compose
from nodes.diffusion.pack.common import sampling_inputs
from nodes.diffusion.runtime import Conditioning, ConditioningList, conditioning_entries
from nodes.diffusion.sampling.composite import Region, blend, composite_denoiser
from nodes.diffusion.sampling.guidance import cfg_denoiser
from nodes.diffusion.sampling.ksampler import sample
from tests.comfy.helpers import full_registry
from tests.diffusion.pipeline_fixtures import write_tiny_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
F = 4  # the tiny VAE's downscale
H, W = 16, 24  # latent cells (64 x 96 pixels): areas wide enough for ComfyUI's feather (rr = side // 4)
RTOL = 1e-5  # float32 model outputs of magnitude ~1; sums of two or three terms


class _Ctx:
    def __init__(self) -> None:
        self.logs: list[str] = []

    def log(self, message: str) -> None:
        self.logs.append(message)


CTX: Any = _Ctx()


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    ck = write_tiny_checkpoint(tmp_path_factory.mktemp("models"), "sd1")
    return load_checkpoint(ck.path)


def _prompts(ck: Any) -> tuple[Conditioning, Conditioning, Conditioning]:
    with torch.inference_mode():
        return ck.clip.encode("a red circle"), ck.clip.encode("a blue square"), ck.clip.encode("")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL * float(b.abs().max()))


def _inputs(model: Any, pos: Any, neg: Any) -> tuple[Any, Any]:
    return sampling_inputs(model, pos, neg, 1, H * F, W * F, None, F)


def _run(model: Any, pos: Any, neg: Any, cfg: float = 5.0) -> torch.Tensor:
    cond, uncond = _inputs(model, pos, neg)
    with torch.inference_mode():
        return sample(model.denoiser(), model.schedule, torch.zeros(1, model.latent_channels, H, W), steps=3,
                      cfg=cfg, seed=3, cond_kwargs=cond, uncond_kwargs=uncond)


def _kw(model: Any, c: Conditioning) -> dict[str, Any]:
    out = _inputs(model, c, None)[0]
    assert isinstance(out, dict)
    return out


def _point(model: Any, percent: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    sigma = torch.tensor([model.schedule.percent_to_sigma(percent)])
    return torch.randn(1, model.latent_channels, H, W, generator=g) * sigma, sigma


def test_single_entry_list_is_bit_identical_to_a_plain_conditioning(sd1: Any) -> None:
    a, _, neg = _prompts(sd1)
    before = _run(sd1.model, a, neg)
    assert torch.equal(_run(sd1.model, ConditioningList((a,)), ConditioningList((neg,))), before)
    # The general (region) path with one whole-image entry per side makes the same batched call.
    x, sigma = _point(sd1.model)
    den = sd1.model.denoiser()
    ka, kn = _kw(sd1.model, a), _kw(sd1.model, neg)
    with torch.inference_mode():
        ref = cfg_denoiser(den, ka, kn, 5.0)(x, sigma)
        got = composite_denoiser(den, [Region(ka)], [Region(kn)], 5.0)(x, sigma)
    assert torch.equal(got, ref)


def test_combine_of_two_identical_entries_equals_one(sd1: Any) -> None:
    a, _, neg = _prompts(sd1)
    both = compose.conditioning_combine.fn(CTX, a, a)
    assert len(conditioning_entries(both)) == 2
    _close(_run(sd1.model, both, neg), _run(sd1.model, a, neg))


def _feather_cols(n: int, rr: int, left: bool, right: bool) -> torch.Tensor:
    w = torch.ones(n)
    for t in range(rr):
        if left:
            w[t] *= (t + 1) / rr
        if right:
            w[n - 1 - t] *= (t + 1) / rr
    return w


def test_area_entry_changes_only_its_region(sd1: Any) -> None:
    a, b, _ = _prompts(sd1)
    # right half: x = 48 px -> cell 12, 48 px wide -> 12 cells; rr = min(8, 12 // 4) = 3, left edge only
    right = compose.conditioning_set_area.fn(CTX, b, width=48, height=64, x=48, y=0, strength=1.0)
    both = compose.conditioning_combine.fn(CTX, a, right)
    regions = _inputs(sd1.model, both, None)[0]
    assert [r.area for r in regions] == [None, (16, 12, 0, 12)]
    x, sigma = _point(sd1.model)
    den = sd1.model.denoiser()
    with torch.inference_mode():
        got = blend(den, [regions], x, sigma)[0]
        pa = den(x, sigma, **_kw(sd1.model, a))
        pb = den(x[..., 12:], sigma, **_kw(sd1.model, b))
    assert torch.equal(got[..., :12], pa[..., :12])  # outside the area: the other entry, exactly
    wb = _feather_cols(12, 3, left=True, right=False)
    expected = (pa[..., 12:] + pb * wb) / (1 + wb)
    _close(got[..., 12:], expected)
    assert not torch.allclose(got[..., 12:], pa[..., 12:], rtol=1e-3)


def test_area_percentage_and_strength(sd1: Any) -> None:
    a, b, _ = _prompts(sd1)
    top = compose.conditioning_set_area_percentage.fn(CTX, b, width=1.0, height=0.5, x=0.0, y=0.0, strength=1.0)
    top = compose.conditioning_set_area_strength.fn(CTX, top, strength=2.5)
    regions = _inputs(sd1.model, compose.conditioning_combine.fn(CTX, a, top), None)[0]
    assert regions[1].area == (8, 24, 0, 0) and regions[1].strength == 2.5
    x, sigma = _point(sd1.model)
    den = sd1.model.denoiser()
    with torch.inference_mode():
        got = blend(den, [regions], x, sigma)[0]
        pa = den(x, sigma, **_kw(sd1.model, a))
        pb = den(x[..., :8, :], sigma, **_kw(sd1.model, b))
    wb = 2.5 * _feather_cols(8, 2, left=False, right=True)[:, None]  # bottom edge inside the image
    _close(got[..., :8, :], (pa[..., :8, :] + pb * wb) / (1 + wb))
    assert torch.equal(got[..., 8:, :], pa[..., 8:, :])


def test_mask_weights_per_cell_and_mask_bounds_crop(sd1: Any) -> None:
    a, b, _ = _prompts(sd1)
    mask = torch.zeros(H * F, W * F)
    mask[:, : W * F // 2] = 1.0  # left half, in pixels (resized to the latent)
    masked = compose.conditioning_set_mask.fn(CTX, b, mask=mask, strength=0.5, set_cond_area="default")
    regions = _inputs(sd1.model, compose.conditioning_combine.fn(CTX, a, masked), None)[0]
    x, sigma = _point(sd1.model)
    den = sd1.model.denoiser()
    with torch.inference_mode():
        got = blend(den, [regions], x, sigma)[0]
        pa = den(x, sigma, **_kw(sd1.model, a))
        pb = den(x, sigma, **_kw(sd1.model, b))
    m = torch.zeros(H, W)
    m[:, : W // 2] = 0.5
    _close(got, (pa + pb * m) / (1 + m))
    bounded = compose.conditioning_set_mask.fn(CTX, b, mask=mask, strength=1.0, set_cond_area="mask bounds")
    r = _inputs(sd1.model, compose.conditioning_combine.fn(CTX, a, bounded), None)[0][1]
    assert r.area == (H, W // 2, 0, 0)


def test_timestep_range_switches_an_entry_on_and_off(sd1: Any) -> None:
    a, b, _ = _prompts(sd1)
    late = compose.conditioning_set_timestep_range.fn(CTX, b, start=0.5, end=1.0)
    regions = _inputs(sd1.model, compose.conditioning_combine.fn(CTX, a, late), None)[0]
    den = sd1.model.denoiser()
    for percent, on in ((0.2, False), (0.8, True)):
        x, sigma = _point(sd1.model, percent)
        with torch.inference_mode():
            got = blend(den, [regions], x, sigma)[0]
            pa = den(x, sigma, **_kw(sd1.model, a))
            pb = den(x, sigma, **_kw(sd1.model, b))
        if on:
            _close(got, (pa + pb) / 2)
        else:
            assert torch.equal(got, pa)
    whole = compose.conditioning_set_timestep_range.fn(CTX, a, start=0.0, end=1.0)
    assert torch.equal(_run(sd1.model, whole, None, cfg=1.0), _run(sd1.model, a, None, cfg=1.0))


def test_batched_equals_one_call_per_entry(sd1: Any) -> None:
    a, b, neg = _prompts(sd1)
    areas = [compose.conditioning_set_area.fn(CTX, c, width=48, height=64, x=x, y=0, strength=1.0)
             for c, x in ((a, 0), (b, 48))]
    pos = compose.conditioning_combine.fn(CTX, compose.conditioning_combine.fn(CTX, a, areas[0]), areas[1])
    cond, uncond = _inputs(sd1.model, pos, neg)
    calls: list[int] = []
    base = sd1.model.denoiser()

    def counting(x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
        calls.append(x.shape[0])
        return base(x, sigma, **kw)

    x, sigma = _point(sd1.model)
    with torch.inference_mode():
        batched = composite_denoiser(counting, cond, [Region(uncond)], 5.0)(x, sigma)
        n_batched = len(calls)
        single = composite_denoiser(counting, cond, [Region(uncond)], 5.0, max_batch=1)(x, sigma)
    # whole-image: cond + uncond in one call; the two half areas (+ their negatives) in another
    assert n_batched == 2 and calls[:2] == [2, 4]
    assert len(calls) - n_batched == 6
    _close(batched, single)
    calls.clear()
    with torch.inference_mode():
        capped = composite_denoiser(counting, cond, [Region(uncond)], 5.0, max_batch=3)(x, sigma)
    assert calls == [2, 3, 1]  # the four half-area entries split 3 + 1
    _close(capped, single)


def test_average_and_concat_against_hand_computation(sd1: Any) -> None:
    a, b, _ = _prompts(sd1)
    short = replace(b, context=b.context[:, :10], pooled=b.pooled * 3)
    avg = compose.conditioning_average.fn(CTX, a, short, conditioning_to_strength=0.25)
    assert avg.context.shape == a.context.shape
    other = torch.cat([short.context, torch.zeros(1, a.context.shape[1] - 10, a.context.shape[2])], dim=1)
    _close(avg.context, a.context * 0.25 + other * 0.75)
    _close(avg.pooled, a.pooled * 0.25 + short.pooled * 0.75)
    cat = compose.conditioning_concat.fn(CTX, compose.conditioning_combine.fn(CTX, a, b), short)
    entries = conditioning_entries(cat)
    assert [e.context.shape[1] for e in entries] == [a.context.shape[1] + 10, b.context.shape[1] + 10]
    assert torch.equal(entries[0].context[:, -10:], short.context) and entries[0].pooled is a.pooled
    compose.conditioning_concat.fn(CTX, a, compose.conditioning_combine.fn(CTX, b, b))
    assert any("only the first" in m for m in CTX.logs)


def test_area_outside_the_image_names_the_input(sd1: Any) -> None:
    a, _, neg = _prompts(sd1)
    far = compose.conditioning_set_area.fn(CTX, a, width=64, height=64, x=512, y=0, strength=1.0)
    with pytest.raises(NodeInputError) as err:
        _inputs(sd1.model, far, neg)
    assert err.value.input == "positive" and "outside" in str(err.value)


def test_flux_area_entry(tmp_path: Path) -> None:
    from nodes.diffusion.split_files import load_diffusion_model_file
    from tests.diffusion.flux_pipeline_fixtures import CLIP_WIDTH, T5_WIDTH, write_flux_files

    files = write_flux_files(tmp_path)
    model = load_diffusion_model_file(tmp_path / "diffusion_models" / files.unet)
    g = torch.Generator().manual_seed(1)
    a, b = (Conditioning(torch.randn(1, 8, T5_WIDTH, generator=g), torch.randn(1, CLIP_WIDTH, generator=g))
            for _ in range(2))
    right = compose.conditioning_set_area.fn(CTX, b, width=48, height=64, x=48, y=0, strength=1.0)
    regions = _inputs(model, compose.conditioning_combine.fn(CTX, a, right), None)[0]
    x, sigma = _point(model)
    den = model.denoiser()
    with torch.inference_mode():
        got = blend(den, [regions], x, sigma)[0]
        pa = den(x, sigma, **_kw_flux(model, a))
        pb = den(x[..., 12:], sigma, **_kw_flux(model, b))
    assert torch.equal(got[..., :12], pa[..., :12])
    wb = _feather_cols(12, 3, left=True, right=False)
    _close(got[..., 12:], (pa[..., 12:] + pb * wb) / (1 + wb))
    # one entry through the general path = the plain call, bit for bit; a late entry is off early on
    late = compose.conditioning_set_timestep_range.fn(CTX, b, start=0.5, end=1.0)
    regions = _inputs(model, compose.conditioning_combine.fn(CTX, a, late), None)[0]
    with torch.inference_mode():
        assert torch.equal(composite_denoiser(den, [Region(_kw_flux(model, a))], None, 1.0)(x, sigma), pa)
        assert torch.equal(blend(den, [regions], x, sigma)[0], pa)  # percent 0.3 < 0.5
        x2, sigma2 = _point(model, 0.8)
        _close(blend(den, [regions], x2, sigma2)[0],
               (den(x2, sigma2, **_kw_flux(model, a)) + den(x2, sigma2, **_kw_flux(model, b))) / 2)


def _kw_flux(model: Any, c: Conditioning) -> dict[str, Any]:
    return model.condition_kwargs(c, 1, H * F, W * F)


def test_comfy_rows_import_and_export() -> None:
    reg = full_registry()
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["1", 1]}},
        "3": {"class_type": "ConditioningSetArea",
              "inputs": {"conditioning": ["2", 0], "width": 256, "height": 512, "x": 256, "y": 0, "strength": 1.5}},
        "4": {"class_type": "ConditioningSetAreaPercentage",
              "inputs": {"conditioning": ["2", 0], "width": 0.5, "height": 1.0, "x": 0.0, "y": 0.0, "strength": 1.0}},
        "5": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["3", 0], "conditioning_2": ["4", 0]}},
        "6": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["5", 0], "start": 0.2,
                                                                       "end": 0.9}},
        "7": {"class_type": "ConditioningAverage",
              "inputs": {"conditioning_to": ["6", 0], "conditioning_from": ["2", 0], "conditioning_to_strength": 0.7}},
        "8": {"class_type": "ConditioningConcat",
              "inputs": {"conditioning_to": ["7", 0], "conditioning_from": ["2", 0]}},
        "9": {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["8", 0], "strength": 0.4}},
        "10": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
        "11": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["9", 0], "mask": ["10", 0],
                                                               "strength": 0.8, "set_cond_area": "mask bounds"}},
    }
    result = load_comfy({k: v for k, v in prompt.items() if k != "10"} | {"11": {**prompt["11"], "inputs": {
        **prompt["11"]["inputs"], "mask": ["3", 0]}}}, reg)
    g = result.graph
    assert g.node("3").type == "diffusion.conditioning_set_area"
    assert g.node("3").values == {"width": 256, "height": 512, "x": 256, "y": 0, "strength": 1.5}
    assert g.node("6").values == {"start": 0.2, "end": 0.9}
    assert g.node("7").values == {"conditioning_to_strength": 0.7}
    assert g.node("11").values == {"strength": 0.8, "set_cond_area": "mask bounds"}
    assert (g.link_into("5", "conditioning_2").src, g.link_into("8", "conditioning_from").src) == ("4", "2")
    out = export_comfy_api(g, reg).prompt
    for nid in ("3", "4", "5", "6", "7", "8", "9"):
        assert out[nid]["class_type"] == prompt[nid]["class_type"]
        assert out[nid]["inputs"] == prompt[nid]["inputs"]
    assert out["11"]["inputs"]["set_cond_area"] == "mask bounds" and out["11"]["inputs"]["strength"] == 0.8


def test_controlnet_stays_on_its_entry_and_sees_the_hint_scaled_to_the_area(sd1: Any) -> None:
    from nodes.diffusion.models.controlnet import ControlNet
    from nodes.diffusion.runtime import ControlHint
    from tests.diffusion.ldm_fixtures import randomize_
    from tests.diffusion.pipeline_fixtures import unet_config_for

    cn = randomize_(ControlNet(unet_config_for("sd1"), 3, (8, 16, 16)), 11).eval()
    hint = torch.zeros(1, 3, H * F, W * F)
    hint[..., 8:40, 50:80] = 1.0
    a, b, _ = _prompts(sd1)
    right = compose.conditioning_set_area.fn(CTX, b, width=48, height=64, x=48, y=0, strength=1.0)
    right = replace(right, controls=(ControlHint(cn, hint),))
    regions = _inputs(sd1.model, compose.conditioning_combine.fn(CTX, a, right), None)[0]
    x, sigma = _point(sd1.model)
    den = sd1.model.denoiser()
    scaled = torch.nn.functional.interpolate(hint, size=(H * F, W * F // 2), mode="nearest-exact")
    with torch.inference_mode():
        got = blend(den, [regions], x, sigma)[0]
        pa = den(x, sigma, **_kw(sd1.model, a))
        pb = den(x[..., 12:], sigma, **{**_kw(sd1.model, b), "controls": (ControlHint(cn, scaled),)})
        plain = den(x[..., 12:], sigma, **_kw(sd1.model, b))
    assert torch.equal(got[..., :12], pa[..., :12])
    wb = _feather_cols(12, 3, left=True, right=False)
    _close(got[..., 12:], (pa[..., 12:] + pb * wb) / (1 + wb))
    assert (pb - plain).abs().max() > 1e-4  # the ControlNet did act on the area entry


def test_mask_batch_that_does_not_fit_the_latent_batch_is_refused(sd1: Any) -> None:
    a, _, neg = _prompts(sd1)
    masked = compose.conditioning_set_mask.fn(CTX, a, mask=torch.ones(2, 8, 8), strength=1.0, set_cond_area="default")
    with pytest.raises(NodeInputError) as err:
        sampling_inputs(sd1.model, masked, neg, 3, H * F, W * F, None, F)
    assert err.value.input == "positive" and "mask" in str(err.value)


def test_regional_graph_runs_through_the_executor(tmp_path: Path) -> None:
    from tests.diffusion.pipeline_fixtures import make_executor, txt2img_graph

    write_tiny_checkpoint(tmp_path / "models", "sd1")
    ex = make_executor(tmp_path / "models", tmp_path / "out")

    def image(g: Any) -> torch.Tensor:
        report = ex.run(g, outputs=["decode"])
        assert report.status == "ok", report.error
        return report.results["decode"]["IMAGE"]

    base = image(txt2img_graph("tiny_sd1.safetensors", width=96, height=64))
    g = txt2img_graph("tiny_sd1.safetensors", width=96, height=64)
    g.add_node("diffusion.text_encode", {"text": "a blue square"}, id="other")
    g.add_node("diffusion.conditioning_set_area", {"width": 48, "height": 64, "x": 48, "y": 0, "strength": 1.0},
               id="area")
    g.add_node("diffusion.conditioning_combine", {}, id="combine")
    g.connect("ckpt", "CLIP", "other", "clip")
    g.connect("other", "CONDITIONING", "area", "conditioning")
    g.connect("positive", "CONDITIONING", "combine", "conditioning_1")
    g.connect("area", "CONDITIONING", "combine", "conditioning_2")
    g.connect("combine", "CONDITIONING", "sampler", "positive")
    regional = image(g)
    assert regional.shape == base.shape
    # The area's pixels change; far from it (left of the area minus the feather and the VAE's reach) they do not
    # change as much: the left quarter moves less than the right half.
    right = (regional - base)[:, :, 48:].abs().mean()
    left = (regional - base)[:, :, :24].abs().mean()
    assert right > 1e-3 and left < right


def test_cfg_with_an_area_gives_the_negative_a_same_area_entry(sd1: Any) -> None:
    """ComfyUI adds the negative prompt over the positive's area, so CFG compares like with like there."""
    a, b, neg = _prompts(sd1)
    right = compose.conditioning_set_area.fn(CTX, b, width=48, height=64, x=48, y=0, strength=1.0)
    cond, uncond = _inputs(sd1.model, compose.conditioning_combine.fn(CTX, a, right), neg)
    x, sigma = _point(sd1.model)
    den = sd1.model.denoiser()
    with torch.inference_mode():
        got = composite_denoiser(den, cond, [Region(uncond)], 4.0)(x, sigma)
        pa, pn = den(x, sigma, **_kw(sd1.model, a)), den(x, sigma, **_kw(sd1.model, neg))
        pb, pn_crop = den(x[..., 12:], sigma, **_kw(sd1.model, b)), den(x[..., 12:], sigma, **_kw(sd1.model, neg))
    wb = _feather_cols(12, 3, left=True, right=False)
    c, u = pa.clone(), pn.clone()
    c[..., 12:] = (pa[..., 12:] + pb * wb) / (1 + wb)
    u[..., 12:] = (pn[..., 12:] + pn_crop * wb) / (1 + wb)
    _close(got, u + 4.0 * (c - u))


def test_comfy_regional_workflow_imports_in_both_formats_and_runs(tmp_path: Path) -> None:
    """tests/comfy/fixtures/conditioning_*.json: every Conditioning* class in one regional-prompt graph."""
    import numpy as np
    from PIL import Image

    from nodegraph import Executor
    from tests.comfy.helpers import FIXTURES

    reg = full_registry()
    ui, api = load_comfy(FIXTURES / "conditioning_ui.json", reg), load_comfy(FIXTURES / "conditioning_api.json", reg)
    for result in (ui, api):
        g = result.graph
        assert g.node("7").type == "diffusion.conditioning_set_area_percentage"
        assert g.node("7").values == {"width": 0.5, "height": 1.0, "x": 0.5, "y": 0.0, "strength": 1.0}
        assert g.node("11").values == {"strength": 0.8, "set_cond_area": "mask bounds"}
        assert g.link_into("11", "mask").src == "10" and g.link_into("11", "mask").src_output == "MASK"
        assert g.node("13").values == {"start": 0.0, "end": 0.8}
        assert g.node("14").values == {"conditioning_to_strength": 0.9}
    write_tiny_checkpoint(tmp_path / "models", "sd1")
    (tmp_path / "input").mkdir()
    rgba = np.zeros((64, 96, 4), dtype=np.uint8)
    rgba[:, 48:, 3] = 255  # LoadImage's MASK is 1 where the image is transparent: the left half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input" / "mask.png")
    ex = Executor(reg, device="cpu", output_dir=tmp_path / "out",
                  settings={"models_dir": str(tmp_path / "models"), "include_demo_models": False,
                            "input_dir": str(tmp_path / "input")})
    report = ex.run(ui.graph, outputs=["20"])
    assert report.status == "ok", report.error
    image = report.results["20"]["IMAGE"]
    assert image.shape == (1, 64, 96, 3) and torch.isfinite(image).all()


def test_entry_nodes_act_on_every_entry(sd1: Any) -> None:
    from nodes.diffusion.pack import conditioning as cond_nodes
    from nodes.diffusion.pack import flux as flux_nodes

    a, b, neg = _prompts(sd1)
    area = compose.conditioning_set_area.fn(CTX, b, width=48, height=64, x=48, y=0, strength=1.0)
    both = compose.conditioning_combine.fn(CTX, a, area)
    guided = conditioning_entries(flux_nodes.flux_guidance.fn(CTX, both, guidance=2.0))
    assert [e.guidance for e in guided] == [2.0, 2.0] and guided[1].area == area.area
    zero = conditioning_entries(flux_nodes.conditioning_zero_out.fn(CTX, both))
    assert all(not e.context.any() and not e.pooled.any() for e in zero) and zero[1].area == area.area
    hint = torch.zeros(1, 64, 96, 3)
    pos, negs = cond_nodes.controlnet_apply_advanced.fn(CTX, both, neg, object(), hint, 0.7, 0.1, 0.9)
    hints = [c.controls for c in conditioning_entries(pos)] + [negs.controls]
    assert all(len(h) == 1 and h[0] is hints[0][0] for h in hints) and hints[0][0].strength == 0.7


def test_latent_batch_with_areas_and_per_item_masks(sd1: Any) -> None:
    """Each latent of a batch gets its own mask (a [B, H, W] MASK), areas apply to all of them."""
    a, b, _ = _prompts(sd1)
    masks = torch.zeros(2, H * F, W * F)
    masks[0, :, :48] = 1.0
    masks[1, :, 48:] = 1.0
    masked = compose.conditioning_set_mask.fn(CTX, b, mask=masks, strength=1.0, set_cond_area="default")
    value = compose.conditioning_combine.fn(CTX, a, masked)
    regions = sampling_inputs(sd1.model, value, None, 2, H * F, W * F, None, F)[0]
    x1, sigma = _point(sd1.model)
    x = torch.cat([x1, x1.flip(-1)])
    den = sd1.model.denoiser()
    with torch.inference_mode():
        got = blend(den, [regions], x, sigma)[0]
        for i in range(2):
            single = [replace(r, kwargs=_kw(sd1.model, e), mask=None if r.mask is None else r.mask[i:i + 1])
                      for r, e in zip(regions, (a, b), strict=True)]
            _close(got[i:i + 1], blend(den, [single], x[i:i + 1], sigma)[0])
