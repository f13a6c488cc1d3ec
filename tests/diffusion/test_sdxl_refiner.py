"""SDXL refiner: detection, bigG-only text encoder, aesthetic-score conditioning, and parity with
diffusers' ``StableDiffusionXLImg2ImgPipeline`` (``requires_aesthetics_score=True``).

The tiny refiner (``refiner_fixtures``) keeps the release's structural traits in its original key layout.

Parity: our KSampler (Advanced) steps 2..4 of a 4-step euler/normal schedule on a given latent, with
CFG, against the pipeline at strength 0.5 (the same two sigmas; the test checks them), the same seed
(our noise is ``torch.randn`` from ``Generator().manual_seed(seed)``, as the pipeline draws it), the
prompt encoded by the pipeline itself with transformers' tokenizer and ``CLIPTextModelWithProjection``.
Tolerance: the tiny UNet's rounding bound times the 2 steps (tests/tolerance.py), and at most 1e-3 of the
latents' magnitude.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nodes.diffusion.checkpoint import load_checkpoint
from nodes.diffusion.models.unet import UNET_PREFIX, UNetModel
from nodes.diffusion.models.unet_config import infer_unet_config
from nodes.diffusion.pack.conditioning import text_encode, text_encode_sdxl_refiner
from nodes.diffusion.pack.sampler import ksampler_advanced
from nodes.diffusion.runtime import Latent
from nodes.diffusion.sampling.schedulers import sigmas_for
from nodes.diffusion.text.tokenizer import default_tokenizer
from tests.diffusion.ldm_fixtures import SDXL_POOLED_DIM, TINY_UNET_ROUNDING, diffusers_unet
from tests.diffusion.pipeline_fixtures import CLIP_G_WIDTH, CLIP_LAYERS, VAE_CONFIG, VAE_PREFIX, write_tiny_checkpoint
from tests.diffusion.refiner_fixtures import REFINER_CLIP, REFINER_UNET_CONFIG, write_tiny_refiner
from tests.diffusion.text_fixtures import MAX_POS, VOCAB, write_hf_tokenizer_files
from tests.tolerance import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
sfu = pytest.importorskip("diffusers.loaders.single_file_utils")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SCALING = 0.13025
PROMPT, NEGATIVE = "a red fox in the snow, oil painting", "blurry"
SEED, STEPS, START, CFG = 7, 4, 2, 5.0
WIDTH, HEIGHT = 48, 32  # non-square: a swapped (height, width) in the size numbers shows
ROUNDING = {"reduction": TINY_UNET_ROUNDING["reduction"], "depth": (STEPS - START) * TINY_UNET_ROUNDING["depth"]}
UNET_CONFIG = REFINER_UNET_CONFIG
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def refiner(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("refiner")
    path = d / "models" / "checkpoints" / "sd_xl_refiner_1.0.safetensors"
    flat = write_tiny_refiner(path)
    vocab = d / "vocab"
    vocab.mkdir()
    write_hf_tokenizer_files(default_tokenizer(), vocab)
    return SimpleNamespace(path=path, models=d / "models", tensors=flat, vocab=vocab)


def test_real_refiner_shapes_are_detected() -> None:
    """adm 2560 with a 1280-wide context is the refiner (shapes only; no metadata)."""
    cfg = dataclasses.replace(UNET_CONFIG, context_dim=1280, adm_in_channels=2560, model_channels=32)
    shapes = {k: SimpleNamespace(shape=v.shape) for k, v in UNetModel(cfg).state_dict().items()}
    got = infer_unet_config(shapes)
    assert got.family == "sdxl-refiner" and got.adm_in_channels == 2560 and got.num_head_channels == 64


def test_loader_builds_the_bigg_only_refiner(refiner: SimpleNamespace) -> None:
    ckpt = load_checkpoint(refiner.path)
    assert ckpt.rules.name == "sdxl-refiner" and ckpt.vae.vae.config.scaling_factor == pytest.approx(SCALING)
    assert len(ckpt.clip.encoders) == 1 and ckpt.clip.encoders[0].config.width == CLIP_G_WIDTH
    cond = ckpt.clip.encode(PROMPT)
    assert cond.context.shape == (1, MAX_POS, CLIP_G_WIDTH) and cond.pooled.shape == (1, SDXL_POOLED_DIM)


def _ctx() -> SimpleNamespace:
    return SimpleNamespace(settings={}, progress=lambda *a: None, services={}, device="cpu", workflow=None,
                           stats=lambda *a: None)


def _init_latent() -> torch.Tensor:
    return torch.randn(1, 4, HEIGHT // 4, WIDTH // 4, generator=torch.Generator().manual_seed(1))


def _ours(ckpt, positive, negative) -> torch.Tensor:  # noqa: ANN001
    out = ksampler_advanced.fn(_ctx(), ckpt.model, add_noise="enable", noise_seed=SEED, steps=STEPS, cfg=CFG,
                               sampler_name="euler", scheduler="normal", positive=positive, negative=negative,
                               latent_image=Latent(_init_latent(), downscale=4), start_at_step=START,
                               end_at_step=10000, return_with_leftover_noise="disable")
    return out.samples


def _reference(refiner: SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents, the sigmas it used) from diffusers' img2img pipeline on the same file's tensors."""
    tok = transformers.CLIPTokenizer.from_pretrained(str(refiner.vocab), pad_token="!", model_max_length=MAX_POS)
    clip_cfg = transformers.CLIPTextConfig(hidden_size=CLIP_G_WIDTH, intermediate_size=4 * CLIP_G_WIDTH,
                                           num_hidden_layers=CLIP_LAYERS, num_attention_heads=CLIP_G_WIDTH // 64,
                                           vocab_size=VOCAB, max_position_embeddings=MAX_POS, hidden_act="gelu",
                                           layer_norm_eps=1e-5, projection_dim=SDXL_POOLED_DIM)
    clip = transformers.CLIPTextModelWithProjection(clip_cfg).eval()
    converted = sfu.convert_open_clip_checkpoint(clip, {k: v for k, v in refiner.tensors.items()
                                                        if k.startswith(REFINER_CLIP)}, prefix=REFINER_CLIP)
    missing, unexpected = clip.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    unet = diffusers_unet(UNET_CONFIG, {k.removeprefix(UNET_PREFIX): v for k, v in refiner.tensors.items()
                                        if k.startswith(UNET_PREFIX)})
    widths = [VAE_CONFIG.ch * m for m in VAE_CONFIG.ch_mult]
    vae_cfg = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
               "block_out_channels": widths, "down_block_types": ["DownEncoderBlock2D"] * len(widths),
               "up_block_types": ["UpDecoderBlock2D"] * len(widths), "norm_num_groups": 32,
               "scaling_factor": SCALING}
    vae = diffusers.AutoencoderKL(**vae_cfg).eval()
    vae.load_state_dict(sfu.convert_ldm_vae_checkpoint({k: v for k, v in refiner.tensors.items()
                                                        if k.startswith(VAE_PREFIX)}, vae_cfg))
    scheduler = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                                 beta_schedule="scaled_linear", prediction_type="epsilon",
                                                 timestep_spacing="linspace", final_sigmas_type="zero")
    pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, text_encoder_2=clip, tokenizer=None, tokenizer_2=tok, unet=unet,
        scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=_init_latent(), strength=(STEPS - START) / STEPS,
                   num_inference_steps=STEPS, guidance_scale=CFG, generator=torch.Generator().manual_seed(SEED),
                   aesthetic_score=6.0, negative_aesthetic_score=2.5, output_type="latent")
    return out.images, scheduler.sigmas


def test_refiner_img2img_matches_diffusers(refiner: SimpleNamespace) -> None:
    ckpt = load_checkpoint(refiner.path)
    positive = text_encode_sdxl_refiner.fn(_ctx(), ascore=6.0, width=WIDTH, height=HEIGHT, text=PROMPT,
                                           clip=ckpt.clip)
    negative = text_encode_sdxl_refiner.fn(_ctx(), ascore=2.5, width=WIDTH, height=HEIGHT, text=NEGATIVE,
                                           clip=ckpt.clip)
    ours = _ours(ckpt, positive, negative)
    ref, ref_sigmas = _reference(refiner)
    ours_sigmas = sigmas_for("normal", STEPS, ckpt.model.schedule, 1.0)
    torch.testing.assert_close(ours_sigmas[START:], ref_sigmas[START:].to(ours_sigmas.dtype), rtol=1e-4, atol=0)
    assert ours.shape == ref.shape and ours.std() > 0.1
    assert (ours - _init_latent()).abs().max() > 0.1  # the refiner really changed the latent
    assert_close(ours, ref, **ROUNDING)
    assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-3

    # Plain text encode = ComfyUI's defaults: the image size, score 6 for the positive, 2.5 for the negative.
    plain = _ours(ckpt, text_encode.fn(_ctx(), ckpt.clip, PROMPT), text_encode.fn(_ctx(), ckpt.clip, NEGATIVE))
    assert_close(plain, ours, **ROUNDING)
    # ... and the aesthetic score does reach the model.
    other = text_encode_sdxl_refiner.fn(_ctx(), ascore=9.0, width=WIDTH, height=HEIGHT, text=PROMPT, clip=ckpt.clip)
    assert (_ours(ckpt, other, negative) - ours).abs().max() > 1e-3


def test_base_then_refiner_workflow_runs_on_tiny_files(refiner: SimpleNamespace, tmp_path: Path) -> None:
    """workflows/sdxl_refiner.json (ComfyUI's example: base steps 0..20 of 25 leaving noise, refiner 20..25)
    validates and runs end to end on tiny base and refiner files under the names it uses."""
    import json
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    import nodegraph
    from nodegraph.plan import validate

    base = write_tiny_checkpoint(refiner.models, "sdxl", name="sd_xl_base_1.0.safetensors")
    assert base.path.parent == refiner.path.parent
    path = ROOT / "workflows" / "sdxl_refiner.json"
    settings = {"models_dir": str(refiner.models), "include_demo_models": False}
    assert validate(nodegraph.load_workflow(path), nodegraph.Registry.with_installed_packs(strict=True),
                    settings=settings) == []
    small = ["latent.width=48", "latent.height=32", "base_sampler.steps=5", "base_sampler.end_at_step=4",
             "refiner_sampler.steps=5", "refiner_sampler.start_at_step=4", "refiner_positive.width=48",
             "refiner_positive.height=32", "refiner_negative.width=48", "refiner_negative.height=32"]
    cmd = [sys.executable, "-m", "nodegraph.cli", "run", str(path), "-o", str(tmp_path / "out"),
           "--report", str(tmp_path / "report.json"), "--device", "cpu", "--models-dir", str(refiner.models),
           "--quiet"]
    for s in small:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["status"] == "ok" and len(data["outputs"]) == 1
    image = np.asarray(Image.open(data["outputs"][0]))
    assert image.shape == (32, 48, 3) and image.std() > 1  # random weights: no picture, but not a flat fill


@pytest.mark.parametrize("name", ["refiner_ui.json", "refiner_api.json"])
def test_comfy_refiner_example_imports_and_exports(name: str) -> None:
    """ComfyUI's base + refiner example (tests/comfy/fixtures/make_refiner_fixtures.py) imports with the
    refiner's aesthetic-score encoders and the base's CLIPTextEncodeSDXL as ours (widgets in ComfyUI's
    order) and exports back to the same classes and inputs."""
    import nodegraph
    from nodegraph.comfy import export_comfy_api, load_comfy

    result = load_comfy(ROOT / "tests" / "comfy" / "fixtures" / name)
    g = result.graph
    pos, neg = g.node("5"), g.node("6")
    assert pos.type == neg.type == "diffusion.text_encode_sdxl_refiner"
    assert (pos.values["ascore"], pos.values["width"], pos.values["height"]) == (6.0, 1024, 1024)
    assert neg.values["ascore"] == 2.5 and neg.values["text"] == "text, watermark"
    assert g.node("9").values["start_at_step"] == 20 and g.node("8").values["return_with_leftover_noise"] == "enable"
    prompt = export_comfy_api(g, nodegraph.Registry.with_installed_packs(strict=True)).prompt
    exported = prompt["5"]
    assert exported["class_type"] == "CLIPTextEncodeSDXLRefiner"
    assert {k: exported["inputs"][k] for k in ("ascore", "width", "height")} == {"ascore": 6.0, "width": 1024,
                                                                                 "height": 1024}
    assert exported["inputs"]["clip"] == ["2", 1]
    # the base's positive prompt: CLIPTextEncodeSDXL, widgets in ComfyUI's order (sizes, text_g, text_l)
    base = g.node("3")
    assert base.type == "diffusion.text_encode_sdxl"
    assert base.values == {"width": 2048, "height": 2048, "crop_w": 0, "crop_h": 0, "target_width": 1024,
                           "target_height": 1024, "text_g": pos.values["text"], "text_l": "galaxy bottle"}
    assert prompt["3"]["class_type"] == "CLIPTextEncodeSDXL"
    assert {k: v for k, v in prompt["3"]["inputs"].items() if k != "clip"} == base.values
