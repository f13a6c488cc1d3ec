"""Inpainting models (issue 16): 9-channel SD1/SD2/SDXL UNets detected from shapes, InpaintModelConditioning
with ComfyUI's meaning, the model's extra input built at every call (also for area entries), and parity
with diffusers' ``StableDiffusionInpaintPipeline`` (SD1 eps, SD2 v) and ``StableDiffusionXLInpaintPipeline``
on tiny inpainting UNets in the LDM layout.

Parity set-up (see test_pipeline_parity for the txt2img conventions it shares): the same file is run
through the engine (Load Image -> Inpaint Model Conditioning (noise_mask off) -> KSampler on an empty
latent, euler/normal, 4 steps, cfg 5) and through diffusers' own inpainting pipeline with the converted
UNet and VAE, the prompt embeddings of transformers' CLIP, our initial noise as ``latents`` (the pipeline
multiplies it by ``init_noise_sigma`` = sigma_max, our start) and the VAE's posterior *mean* (diffusers
samples it; we encode deterministically).  The mask is aligned to the VAE's 4-pixel cells so diffusers'
nearest and ComfyUI's bilinear-then-round downscaling agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodegraph import Executor, Graph
from nodegraph.errors import NodeInputError
from nodes.diffusion.checkpoint import load_checkpoint
from nodes.diffusion.inpaint import SD_BLANK_LATENT
from nodes.diffusion.pack.common import sampling_inputs
from nodes.diffusion.pack.inpaint import inpaint_model_conditioning
from nodes.diffusion.runtime import ConditioningList, Latent
from nodes.diffusion.sampling.composite import blend
from nodes.diffusion.sampling.noise import initial_noise
from tests.comfy.helpers import full_registry
from tests.diffusion.fake_context import FakeContext
from tests.diffusion.ldm_fixtures import TINY_UNET_ROUNDING, diffusers_unet
from tests.diffusion.pipeline_fixtures import HEIGHT, WIDTH, write_tiny_checkpoint
from tests.tolerance import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")
F_VAE = 4  # the tiny VAE's downscale
SEED, STEPS, CFG = 42, 4, 5.0
PROMPT, NEGATIVE = "a red fox in the snow, oil painting", ""
# diffusers 0.42 warns about numpy 2 copies and our scheduler config's steps_offset; not our concern here.
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The configuration file of this scheduler:FutureWarning")]
LATENT_ROUNDING = {"reduction": TINY_UNET_ROUNDING["reduction"], "depth": STEPS * TINY_UNET_ROUNDING["depth"]}


CTX: Any = FakeContext()


def _image(seed: int = 1, h: int = HEIGHT, w: int = WIDTH) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, h, w, 3, generator=g)


def _mask(h: int = HEIGHT, w: int = WIDTH) -> torch.Tensor:
    """1 on a 4-pixel-aligned rectangle (latent cells 2..5 x 3..8)."""
    m = torch.zeros(1, h, w)
    m[:, 8:24, 12:36] = 1.0
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inpaint") / "models"
    for kind in ("sd1", "sd2", "sdxl"):
        write_tiny_checkpoint(d, kind, name=f"inpaint_{kind}.safetensors", in_channels=9)
    write_tiny_checkpoint(d, "sd1")
    return d


def _load(models: Path, name: str) -> Any:
    return load_checkpoint(models / "checkpoints" / name)


class _Capture:
    """Records the input of every UNet call."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = unet.register_forward_pre_hook(lambda mod, args: self.inputs.append(args[0].detach().clone()))

    def __enter__(self) -> _Capture:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_nine_channel_unets_are_inpainting_models(kind: str, models: Path) -> None:
    ck = _load(models, f"inpaint_{kind}.safetensors")
    assert ck.model.unet.config.in_channels == 9
    assert ck.model.latent_channels == 4 and ck.model.concat_channels == 5
    plain = _load(models, "tiny_sd1.safetensors")
    assert plain.model.latent_channels == 4 and plain.model.concat_channels == 0


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_model_input_is_latent_mask_and_masked_image_latent(kind: str, models: Path) -> None:
    """Hand-computed reference of what the UNet sees: [c_in * x, round(bilinear(mask)), encode(grey-masked)]."""
    ck = _load(models, f"inpaint_{kind}.safetensors")
    pixels, mask = _image(), _mask()
    mask[:, 5, 7] = 1.0  # a stray pixel: bilinear-then-round must drop it like ComfyUI
    with torch.inference_mode():
        pos, neg = ck.clip.encode("a cat"), ck.clip.encode("")
        p2, n2, latent = inpaint_model_conditioning.fn(CTX, pos, neg, ck.vae, pixels, mask, True)
    assert latent.noise_mask is not None and latent.noise_mask.shape == (1, HEIGHT, WIDTH)
    h, w = HEIGHT // F_VAE, WIDTH // F_VAE
    cond, uncond = sampling_inputs(ck.model, p2, n2, 1, HEIGHT, WIDTH, "euler", F_VAE, latent)
    x = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([2.0])
    with _Capture(ck.model.unet) as cap, torch.inference_mode():
        ck.model.denoiser()(x, sigma, **cond)
    got = cap.inputs[0]
    grey = pixels.clone()
    grey[mask.round().bool()] = 0.5
    with torch.inference_mode():
        masked_latent = ck.vae.encode(grey)
    m_lat = F.interpolate(mask[:, None], size=(h, w), mode="bilinear").round()
    assert m_lat[0, 0, 1, 1] == 0 and m_lat.sum() == 4 * 6
    expected = torch.cat([x / (sigma**2 + 1) ** 0.5, m_lat, masked_latent], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert "concat" in uncond  # the negative prompt carries the same image and mask


def test_without_a_mask_the_model_repaints_everything(models: Path) -> None:
    """ComfyUI: an inpainting model given no mask anywhere sees mask 1 and the latent of a black image."""
    ck = _load(models, "inpaint_sd1.safetensors")
    with torch.inference_mode():
        pos = ck.clip.encode("a cat")
    kw = sampling_inputs(ck.model, pos, None, 2, HEIGHT, WIDTH, None, F_VAE,
                         Latent(torch.zeros(2, 4, HEIGHT // F_VAE, WIDTH // F_VAE), downscale=F_VAE))[0]
    cat = kw["concat"]
    assert cat.shape == (2, 5, HEIGHT // F_VAE, WIDTH // F_VAE)
    assert torch.all(cat[:, 0] == 1)
    torch.testing.assert_close(cat[:, 1:, 0, 0], torch.tensor([SD_BLANK_LATENT] * 2))


def test_vae_encode_for_inpaint_feeds_the_latent_and_noise_mask(models: Path) -> None:
    """ComfyUI's fallback: with no concat image on the prompt, the sampler's latent and noise mask are used."""
    ck = _load(models, "inpaint_sd1.safetensors")
    h, w = HEIGHT // F_VAE, WIDTH // F_VAE
    z = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(8))
    mask = _mask()
    with torch.inference_mode():
        pos = ck.clip.encode("a cat")
    kw = sampling_inputs(ck.model, pos, None, 1, HEIGHT, WIDTH, None, F_VAE,
                         Latent(z, noise_mask=mask, downscale=F_VAE))[0]
    torch.testing.assert_close(kw["concat"][:, 1:], z)
    torch.testing.assert_close(kw["concat"][:, :1], F.interpolate(mask[:, None], size=(h, w), mode="bilinear").round())


def test_area_entries_get_their_crop_of_the_extra_input(models: Path) -> None:
    """An area entry's model call sees the same crop of [mask, masked latent] as of the noisy latent,
    and entries that share shapes still share one batched call."""
    ck = _load(models, "inpaint_sd1.safetensors")
    pixels, mask = _image(), _mask()
    with torch.inference_mode():
        pos, neg = ck.clip.encode("a cat"), ck.clip.encode("")
        p2, _, latent = inpaint_model_conditioning.fn(CTX, pos, neg, ck.vae, pixels, mask, False)
    from dataclasses import replace

    from nodes.diffusion.runtime import Area

    whole = p2
    left = replace(p2, area=Area(HEIGHT, 24, 0, 0))
    right = replace(p2, area=Area(HEIGHT, 24, 0, 24))
    regions = sampling_inputs(ck.model, ConditioningList((whole, left, right)), None, 1, HEIGHT, WIDTH, None,
                              F_VAE, latent)[0]
    full = regions[0].kwargs["concat"]
    x = torch.randn(1, 4, HEIGHT // F_VAE, WIDTH // F_VAE, generator=torch.Generator().manual_seed(2))
    with _Capture(ck.model.unet) as cap, torch.inference_mode():
        blend(ck.model.denoiser(), [regions], x, torch.tensor([1.5]))
    assert len(cap.inputs) == 2  # the two same-shaped halves share a call
    shapes = sorted(tuple(t.shape) for t in cap.inputs)
    assert shapes == [(1, 9, 8, 12), (2, 9, 8, 6)]
    halves = next(t for t in cap.inputs if t.shape[0] == 2)
    torch.testing.assert_close(halves[0, 4:], full[0, :, :, :6])
    torch.testing.assert_close(halves[1, 4:], full[0, :, :, 6:])


def test_ordinary_model_ignores_the_concat_and_inpaints_through_the_noise_mask(models: Path) -> None:
    """As in ComfyUI: InpaintModelConditioning on a 4-channel model = VAE Encode + Set Latent Noise Mask."""
    from nodes.diffusion.pack.sampler import run_sampler

    ck = _load(models, "tiny_sd1.safetensors")
    pixels, mask = _image(), _mask()
    with torch.inference_mode():
        pos, neg = ck.clip.encode("a cat"), ck.clip.encode("")
        p2, n2, latent = inpaint_model_conditioning.fn(CTX, pos, neg, ck.vae, pixels, mask, True)
        plain = Latent(ck.vae.encode(pixels), noise_mask=mask, downscale=F_VAE)
    kw = dict(seed=5, steps=3, cfg=4.0, sampler_name="euler", scheduler="normal")
    a = run_sampler(CTX, ck.model, p2, n2, latent, **kw).samples
    b = run_sampler(CTX, ck.model, pos, neg, plain, **kw).samples
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # outside the mask the latent is kept exactly; inside it changed
    keep = F.interpolate(mask[:, None], size=a.shape[-2:], mode="bilinear") == 0
    torch.testing.assert_close(a[keep.expand_as(a)], plain.samples[keep.expand_as(a)])
    assert (a - plain.samples).abs().amax() > 0.1


def test_mask_of_another_size_is_resized_to_the_image(models: Path) -> None:
    ck = _load(models, "inpaint_sd1.safetensors")
    pixels = _image()
    small = _mask()[:, ::2, ::2]  # 16 x 24 for a 32 x 48 image
    with torch.inference_mode():
        pos = ck.clip.encode("a cat")
        p2, _, latent = inpaint_model_conditioning.fn(CTX, pos, pos, ck.vae, pixels, small, True)
    expected = F.interpolate(small[:, None], size=(HEIGHT, WIDTH), mode="bilinear")
    torch.testing.assert_close(p2.concat_mask, expected)
    torch.testing.assert_close(latent.noise_mask, expected[:, 0])
    with pytest.raises(NodeInputError) as err:
        inpaint_model_conditioning.fn(CTX, pos, pos, ck.vae, pixels, torch.zeros(3, 8, 8), True)
    assert err.value.input == "mask"


def test_unsupported_extra_channels_are_a_clear_error(tmp_path: Path) -> None:
    """A 7-channel UNet is neither an inpainting nor an InstructPix2Pix model: sampling blames the model."""
    ck = write_tiny_checkpoint(tmp_path / "models", "sd1", name="odd.safetensors", in_channels=7)
    loaded = load_checkpoint(ck.path)
    with torch.inference_mode():
        pos = loaded.clip.encode("a cat")
    with pytest.raises(NodeInputError) as err:
        sampling_inputs(loaded.model, pos, None, 1, HEIGHT, WIDTH, None, F_VAE,
                        Latent(torch.zeros(1, 4, HEIGHT // F_VAE, WIDTH // F_VAE), downscale=F_VAE))
    assert err.value.input == "model" and "InstructPix2Pix" in str(err.value) and "7 input channels" in str(err.value)


# ----------------------------------------------------------------------------- diffusers parity


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _graph(ckpt: str, image: Path, mask: Path) -> Graph:
    g = Graph()
    g.add_node("diffusion.checkpoint_loader", {"ckpt_name": ckpt, "prediction": "auto"}, id="ckpt")
    g.add_node("diffusion.text_encode", {"text": PROMPT}, id="positive")
    g.add_node("diffusion.text_encode", {"text": NEGATIVE}, id="negative")
    g.add_node("image.load_path", {"path": str(image)}, id="load")
    g.add_node("image.load_path", {"path": str(mask)}, id="mask_image")
    g.add_node("image.to_mask", {"channel": "red"}, id="mask")
    g.add_node("diffusion.inpaint_model_conditioning", {"noise_mask": False}, id="inpaint")
    g.add_node("diffusion.empty_latent", {"width": WIDTH, "height": HEIGHT, "batch_size": 1}, id="latent")
    g.add_node("diffusion.ksampler", {"seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
                                      "scheduler": "normal", "denoise": 1.0}, id="sampler")
    for src, out, dst, inp in [("ckpt", "CLIP", "positive", "clip"), ("ckpt", "CLIP", "negative", "clip"),
                               ("mask_image", "IMAGE", "mask", "image"), ("positive", "CONDITIONING", "inpaint",
                                                                           "positive"),
                               ("negative", "CONDITIONING", "inpaint", "negative"), ("ckpt", "VAE", "inpaint", "vae"),
                               ("load", "IMAGE", "inpaint", "pixels"), ("mask", "MASK", "inpaint", "mask"),
                               ("ckpt", "VAE", "latent", "vae"), ("ckpt", "MODEL", "sampler", "model"),
                               ("inpaint", "positive", "sampler", "positive"),
                               ("inpaint", "negative", "sampler", "negative"),
                               ("latent", "LATENT", "sampler", "latent_image")]:
        g.connect(src, out, dst, inp)
    return g


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_inpaint_unet_matches_diffusers_inpaint_pipeline(kind: str, models: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as sdi
    from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl_inpaint as sdxli

    from nodes.diffusion.models.unet import UNET_PREFIX
    from tests.diffusion.pipeline_fixtures import TinyCheckpoint, build_checkpoint
    from tests.diffusion.test_pipeline_parity import _reference_text, _reference_vae, hf_vocab_dir  # noqa: F401

    torch.set_num_threads(1)
    img = (np.random.default_rng(4).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    m = (_mask()[0].numpy() * 255).astype(np.uint8)
    _write_png(tmp_path / "image.png", img)
    _write_png(tmp_path / "mask.png", np.stack([m] * 3, -1))

    name = f"inpaint_{kind}.safetensors"
    executor = Executor(full_registry(), device="cpu", output_dir=tmp_path / "out",
                        settings={"models_dir": str(models), "include_demo_models": False})
    report = executor.run(_graph(name, tmp_path / "image.png", tmp_path / "mask.png"),
                          outputs=["load", "mask", "sampler"])
    report.raise_for_status()
    ours = report.results["sampler"]["LATENT"].samples
    pixels = report.results["load"]["IMAGE"]
    mask = report.results["mask"]["MASK"]

    cfg, flat, metadata = build_checkpoint(kind, 0, 9)
    ckpt = TinyCheckpoint(kind, models / "checkpoints" / name, cfg, flat, metadata)
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    from nodes.diffusion.text.tokenizer import default_tokenizer
    from tests.diffusion.text_fixtures import write_hf_tokenizer_files

    write_hf_tokenizer_files(default_tokenizer(), vocab)
    cond, uncond = _reference_text(ckpt, vocab, PROMPT), _reference_text(ckpt, vocab, NEGATIVE)
    unet = diffusers_unet(cfg, {k.removeprefix(UNET_PREFIX): v for k, v in ckpt.component(UNET_PREFIX).items()})
    vae = _reference_vae(ckpt)
    scheduler = diffusers.EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type={"sd1": "epsilon", "sd2": "v_prediction", "sdxl": "epsilon"}[kind],
        timestep_spacing="linspace", final_sigmas_type="zero")
    prompts: dict[str, Any] = {"prompt_embeds": cond.context, "negative_prompt_embeds": uncond.context}
    if kind == "sdxl":  # time ids = [h, w, 0, 0, h, w] as ours (no aesthetic score: a base model)
        pipe = diffusers.StableDiffusionXLInpaintPipeline(
            vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
            scheduler=scheduler, requires_aesthetics_score=False, add_watermarker=False)
        prompts.update(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=uncond.pooled)
    else:
        pipe = diffusers.StableDiffusionInpaintPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                                        scheduler=scheduler, safety_checker=None,
                                                        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    # diffusers samples the VAE posterior; our encode is its mean (deterministic).
    for module in (sdi, sdxli):
        monkeypatch.setattr(module, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                            out.latent_dist.mode())
    noise = initial_noise((1, 4, HEIGHT // F_VAE, WIDTH // F_VAE), SEED)
    with torch.no_grad():
        ref = pipe(**prompts, image=pixels.permute(0, 3, 1, 2), mask_image=mask[:, None], height=HEIGHT,
                   width=WIDTH, strength=1.0, num_inference_steps=STEPS, guidance_scale=CFG, latents=noise,
                   output_type="latent").images
    assert ours.shape == ref.shape
    assert ours.std() > 0.1
    assert_close(ours, ref, **LATENT_ROUNDING)
    print(f"{kind}: max |ours - diffusers| / max |diffusers| = {float((ours - ref).abs().max() / ref.abs().max()):.2e}")
    # not vacuous: the masked image reaches the model (another image gives other latents)
    with torch.no_grad():
        other = pipe(**prompts, image=1 - pixels.permute(0, 3, 1, 2), mask_image=mask[:, None], height=HEIGHT,
                     width=WIDTH, strength=1.0, num_inference_steps=STEPS, guidance_scale=CFG, latents=noise,
                     output_type="latent").images
    assert (other - ref).abs().max() > 100 * (ours - ref).abs().max()


def test_comfy_inpaint_fixtures_import_run_and_export(tmp_path: Path) -> None:
    """tests/comfy/fixtures/inpaint_*.json (ImagePadForOutpaint -> InpaintModelConditioning -> KSampler, and
    InstructPixToPixConditioning): both layouts import to the same nodes and values, the graph runs on a tiny
    inpainting checkpoint (outpainting: the padded sides change, the kept centre stays), and exports back."""
    from nodegraph.comfy import export_comfy_api, load_comfy
    from tests.comfy.helpers import FIXTURES

    reg = full_registry()
    ui, api = load_comfy(FIXTURES / "inpaint_ui.json", reg), load_comfy(FIXTURES / "inpaint_api.json", reg)
    for result in (ui, api):
        g = result.graph
        assert g.node("6").type == "diffusion.inpaint_model_conditioning" and g.node("6").values == {"noise_mask": True}
        assert g.link_into("6", "mask").src == "5" and g.link_into("6", "mask").src_output == "MASK"
        assert g.link_into("7", "latent_image").src_output == "latent"
        assert g.link_into("11", "negative").src == "10" and g.link_into("11", "negative").src_output == "negative"
    write_tiny_checkpoint(tmp_path / "models", "sd1", name="inpaint_sd1.safetensors", in_channels=9)
    (tmp_path / "input").mkdir()
    img = (np.random.default_rng(2).random((32, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "input" / "image.png")
    ex = Executor(reg, device="cpu", output_dir=tmp_path / "out",
                  settings={"models_dir": str(tmp_path / "models"), "include_demo_models": False,
                            "input_dir": str(tmp_path / "input")})
    report = ex.run(api.graph, outputs=["6", "7", "11"])
    assert report.status == "ok", report.error
    before, after = report.results["6"]["latent"], report.results["7"]["LATENT"]
    assert after.samples.shape == (1, 4, 8, 12)  # 32 x (16 + 2 x 16) pixels, 4x VAE
    kept = F.interpolate(before.noise_mask[:, None], size=(8, 12), mode="bilinear")[0, 0] == 0  # as the sampler
    assert 0 < int(kept.sum()) < kept.numel()
    torch.testing.assert_close(after.samples[0][:, kept], before.samples[0][:, kept])
    assert (after.samples[0][:, ~kept] - before.samples[0][:, ~kept]).abs().amax() > 0.1
    assert report.results["11"]["LATENT"].samples.shape == (1, 4, 8, 4)
    exported = export_comfy_api(api.graph, reg).prompt
    assert exported["7"]["inputs"]["latent_image"] == ["6", 2]
    classes = {n["class_type"] for n in exported.values()}
    assert {"InpaintModelConditioning", "InstructPixToPixConditioning", "ImagePadForOutpaint"} <= classes
    node6 = next(n for n in exported.values() if n["class_type"] == "InpaintModelConditioning")
    assert node6["inputs"]["noise_mask"] is True


def test_image_from_another_family_s_vae_is_a_clear_error(models: Path) -> None:
    """A 16-channel (FLUX/SD3 VAE) image latent on the prompt of a 4-channel inpainting UNet: the prompt
    input is blamed, with the fix, before any sampling."""
    from dataclasses import replace

    ck = _load(models, "inpaint_sd1.safetensors")
    with torch.inference_mode():
        pos = ck.clip.encode("a cat")
    bad = replace(pos, concat_latent=torch.zeros(1, 16, 4, 6), concat_mask=_mask()[:, None])
    with pytest.raises(NodeInputError) as err:
        sampling_inputs(ck.model, pos, bad, 1, HEIGHT, WIDTH, None, F_VAE,
                        Latent(torch.zeros(1, 4, HEIGHT // F_VAE, WIDTH // F_VAE), downscale=F_VAE))
    assert err.value.input == "negative" and "16" in str(err.value) and "VAE" in err.value.fix


def test_custom_sampling_path_gives_the_inpainting_model_its_extra_input(models: Path) -> None:
    """SamplerCustomAdvanced (CFG Guider + Basic Scheduler) on an inpainting model gives the KSampler's latents,
    for InpaintModelConditioning and for VAE Encode (for Inpainting)'s latent-only fallback."""
    from nodes.diffusion.pack import custom_sampling as cs
    from nodes.diffusion.pack.sampler import run_sampler
    from nodes.diffusion.pack.vae import vae_encode_for_inpaint

    ck = _load(models, "inpaint_sd1.safetensors")
    pixels, mask = _image(), _mask()
    with torch.inference_mode():
        pos, neg = ck.clip.encode("a cat"), ck.clip.encode("")
        p2, n2, latent = inpaint_model_conditioning.fn(CTX, pos, neg, ck.vae, pixels, mask, True)
        grey_latent = vae_encode_for_inpaint.fn(CTX, pixels, ck.vae, mask, 0)
    sigmas = cs.basic_scheduler.fn(CTX, ck.model, "normal", 3, 1.0)
    for p, n, lat in ((p2, n2, latent), (pos, neg, grey_latent)):
        a = run_sampler(CTX, ck.model, p, n, lat, seed=9, steps=3, cfg=4.0, sampler_name="euler",
                        scheduler="normal").samples
        b, _ = cs.sampler_custom_advanced.fn(CTX, cs.SeededNoise(9), cs.CFGGuide(ck.model, p, n, 4.0),
                                             cs.SamplerChoice("euler"), sigmas, lat)
        torch.testing.assert_close(b.samples, a, rtol=1e-5, atol=1e-5)


def test_batches_and_sizes_follow_comfyui_rules() -> None:
    """ComfyUI's resize_to_batch_size and common_upscale(..., "center") as used for the extra input."""
    from nodes.diffusion.inpaint import resize_center, resize_to_batch

    t = torch.arange(3.0)[:, None, None, None]
    assert resize_to_batch(t[:2], 3).flatten().tolist() == [0.0, 1.0, 1.0]  # floor((i + 0.5) * 2 / 3)
    assert resize_to_batch(t, 2).flatten().tolist() == [0.0, 2.0]  # round(i * (3 - 1) / (2 - 1))
    assert resize_to_batch(t, 1).flatten().tolist() == [0.0]
    wide = torch.zeros(1, 1, 4, 8)
    wide[..., 2:6] = 1.0  # the centre square of a 2:1 picture
    torch.testing.assert_close(resize_center(wide, 2, 2), torch.ones(1, 1, 2, 2))  # cropped to 1:1, then scaled


def test_two_images_share_one_mask(models: Path) -> None:
    ck = _load(models, "inpaint_sd1.safetensors")
    pixels = torch.cat([_image(1), _image(2)])
    with torch.inference_mode():
        pos = ck.clip.encode("a cat")
        p2, _, latent = inpaint_model_conditioning.fn(CTX, pos, pos, ck.vae, pixels, _mask(), True)
    assert latent.samples.shape[0] == 2 and latent.noise_mask.shape == (1, HEIGHT, WIDTH)
    kw = sampling_inputs(ck.model, p2, None, 2, HEIGHT, WIDTH, None, F_VAE, latent)[0]
    cat = kw["concat"]
    assert cat.shape == (2, 5, HEIGHT // F_VAE, WIDTH // F_VAE)
    torch.testing.assert_close(cat[0, :1], cat[1, :1])  # one mask for both
    assert (cat[0, 1:] - cat[1, 1:]).abs().max() > 0.01  # each its own masked image


# ----------------------------------------------------------------------------- InstructPix2Pix (8 channels)


def _ip2p_graph(ckpt: str, image: Path, prompt: str = PROMPT) -> Graph:
    """Load Image -> InstructPixToPix Conditioning (both prompts, the checkpoint's VAE) -> KSampler on the
    node's empty latent: ComfyUI's InstructPix2Pix graph."""
    g = Graph()
    g.add_node("diffusion.checkpoint_loader", {"ckpt_name": ckpt, "prediction": "auto"}, id="ckpt")
    g.add_node("diffusion.text_encode", {"text": prompt}, id="positive")
    g.add_node("diffusion.text_encode", {"text": NEGATIVE}, id="negative")
    g.add_node("image.load_path", {"path": str(image)}, id="load")
    g.add_node("diffusion.instruct_pix2pix_conditioning", {}, id="ip2p")
    g.add_node("diffusion.ksampler", {"seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
                                      "scheduler": "normal", "denoise": 1.0}, id="sampler")
    for src, out, dst, inp in [("ckpt", "CLIP", "positive", "clip"), ("ckpt", "CLIP", "negative", "clip"),
                               ("positive", "CONDITIONING", "ip2p", "positive"),
                               ("negative", "CONDITIONING", "ip2p", "negative"), ("ckpt", "VAE", "ip2p", "vae"),
                               ("load", "IMAGE", "ip2p", "pixels"), ("ckpt", "MODEL", "sampler", "model"),
                               ("ip2p", "positive", "sampler", "positive"), ("ip2p", "negative", "sampler", "negative"),
                               ("ip2p", "latent", "sampler", "latent_image")]:
        g.connect(src, out, dst, inp)
    return g


@pytest.fixture(scope="module")
def ip2p_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ip2p") / "models"
    write_tiny_checkpoint(d, "sd1", name="ip2p_sd1.safetensors", in_channels=8)
    return d


def test_ip2p_unet_input_is_latent_and_unscaled_image_latent(ip2p_models: Path) -> None:
    """The 8-channel UNet sees [scaled noisy latent, the image's VAE latent in the VAE's own units]; without
    InstructPixToPix Conditioning the image half is zeros (ComfyUI's IP2P.concat_cond)."""
    ck = _load(ip2p_models, "ip2p_sd1.safetensors")
    assert ck.model.concat_channels == 4 and ck.model.latent_channels == 4
    from nodes.diffusion.pack.inpaint import instruct_pix2pix_conditioning
    from nodes.diffusion.pack.sampler import ksampler

    pixels = _image()
    with torch.inference_mode():
        pos, neg = ck.clip.encode(PROMPT), ck.clip.encode(NEGATIVE)
    p2, n2, latent = instruct_pix2pix_conditioning.fn(CTX, pos, neg, ck.vae, pixels)
    assert latent.samples.shape == (1, 4, HEIGHT // F_VAE, WIDTH // F_VAE) and not latent.samples.any()
    with torch.inference_mode():
        scaled = ck.vae.encode(pixels)
    raw = scaled / ck.vae.vae.config.scaling_factor
    for cond, expect in ((p2, raw), (pos, torch.zeros_like(raw))):
        with _Capture(ck.model.unet) as cap, torch.inference_mode():
            ksampler.fn(CTX, ck.model, SEED, 1, CFG, "euler", "normal", cond, cond, latent, 1.0)
        x = cap.inputs[0]
        assert x.shape[1] == 8
        assert_close(x[:1, 4:], expect, reduction=1, depth=1)


def test_ip2p_unet_matches_diffusers_instruct_pix2pix_pipeline(ip2p_models: Path, tmp_path: Path) -> None:
    """Same file, seed and sigmas: ours against diffusers' ``StableDiffusionInstructPix2PixPipeline`` at
    ``image_guidance_scale`` 1, which is what CFG over two prompts that both carry the image computes
    (uncond + g (text - image) + 1 (image - uncond) = image + g (text - image))."""
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from nodes.diffusion.models.unet import UNET_PREFIX
    from nodes.diffusion.text.tokenizer import default_tokenizer
    from tests.diffusion.pipeline_fixtures import TinyCheckpoint, build_checkpoint
    from tests.diffusion.test_pipeline_parity import _reference_text, _reference_vae
    from tests.diffusion.text_fixtures import write_hf_tokenizer_files

    torch.set_num_threads(1)
    img = (np.random.default_rng(5).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    _write_png(tmp_path / "image.png", img)
    executor = Executor(full_registry(), device="cpu", output_dir=tmp_path / "out",
                        settings={"models_dir": str(ip2p_models), "include_demo_models": False})
    report = executor.run(_ip2p_graph("ip2p_sd1.safetensors", tmp_path / "image.png"), outputs=["load", "sampler"])
    report.raise_for_status()
    ours = report.results["sampler"]["LATENT"].samples
    pixels = report.results["load"]["IMAGE"]

    cfg, flat, metadata = build_checkpoint("sd1", 0, 8)
    ckpt = TinyCheckpoint("sd1", ip2p_models / "checkpoints" / "ip2p_sd1.safetensors", cfg, flat, metadata)
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    write_hf_tokenizer_files(default_tokenizer(), vocab)
    cond, uncond = _reference_text(ckpt, vocab, PROMPT), _reference_text(ckpt, vocab, NEGATIVE)
    unet = diffusers_unet(cfg, {k.removeprefix(UNET_PREFIX): v for k, v in ckpt.component(UNET_PREFIX).items()})
    scheduler = diffusers.EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", timestep_spacing="linspace", final_sigmas_type="zero")
    pipe = diffusers.StableDiffusionInstructPix2PixPipeline(
        vae=_reference_vae(ckpt), text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    noise = initial_noise((1, 4, HEIGHT // F_VAE, WIDTH // F_VAE), SEED)

    def run(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return pipe(prompt_embeds=cond.context, negative_prompt_embeds=uncond.context, image=image,
                        num_inference_steps=STEPS, guidance_scale=CFG, image_guidance_scale=1.0, latents=noise,
                        output_type="latent").images

    ref = run(pixels.permute(0, 3, 1, 2))
    assert ours.shape == ref.shape and ours.std() > 0.1
    assert_close(ours, ref, **LATENT_ROUNDING)
    # not vacuous: the image reaches the model (another image gives other latents)
    assert (run(1 - pixels.permute(0, 3, 1, 2)) - ref).abs().max() > 100 * (ours - ref).abs().max()
