"""FLUX Fill (img_in 384) and Canny/Depth (img_in 128) sample (issue 14's variants, issue 16's FLUX Fill):
our graphs vs diffusers' ``FluxFillPipeline`` / ``FluxControlPipeline`` on tiny random split files, plus a
hand-computed reference of the transformer's input.

Both sides use the same files: the transformer (BFL layout for us, the diffusers module for the reference),
CLIP-L and T5 (transformers' models, as in test_flux_pipeline), and the 16-channel ``ae`` VAE (converted with
diffusers' LDM converter).  diffusers samples the VAE posterior where we take its mean; the tiny VAE's
log-variance is pinned at diffusers' clamp (-30, std 3e-7) so both encode the same latents.  Same noise
(passed as ``latents``), same resolution-shifted sigmas (ModelSamplingFlux), guidance 4, cfg 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nodegraph import Executor, Graph
from nodes.diffusion.sampling import initial_noise
from tests.comfy.helpers import full_registry
from tests.diffusion.flux_fixtures import diffusers_flux, pack_latents, unpack_latents
from tests.diffusion.flux_pipeline_fixtures import CLIP_WIDTH, T5_WIDTH, FluxFiles, flux_bfl_sd, write_flux_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

PROMPT = "a small blue square on a white background"
SEED, STEPS, WIDTH, HEIGHT, GUIDANCE = 42, 4, 64, 48, 4.0
REL = 1e-3  # the bar for latents (fp32; observed ~1e-6)
FILL_IN, CONTROL_IN = 384, 128  # img_in widths: 4 x (16 + 16 + 64) and 4 x (16 + 16)


def rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dev set plus Fill and Canny transformers; the VAE's posterior made (almost) deterministic."""
    from safetensors.torch import load_file

    models = tmp_path_factory.mktemp("flux_fill") / "models"
    base = write_flux_files(models, guidance=True)
    vae_path = models / "vae" / base.vae
    sd = load_file(vae_path)
    w, b = sd["encoder.conv_out.weight"], sd["encoder.conv_out.bias"]
    w[16:] = 0
    b[16:] = -100.0  # logvar -> clamped to -30 by diffusers
    save_file(sd, os.fspath(vae_path))
    out: dict[str, Any] = {"models": models, "base": base}
    for name, width, seed in (("fill", FILL_IN, 11), ("canny", CONTROL_IN, 12)):
        t = diffusers_flux(True, seed, in_channels=width, out_channels=64, joint_attention_dim=T5_WIDTH,
                           pooled_projection_dim=CLIP_WIDTH)
        save_file(flux_bfl_sd(t), os.fspath(models / "diffusion_models" / f"tiny_{name}.safetensors"))
        out[name] = t
    img = (np.random.default_rng(4).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[8:32, 16:48] = 255
    Image.fromarray(img).save(models / "image.png")
    Image.fromarray(np.stack([mask] * 3, -1)).save(models / "mask.png")
    return out


def _graph(files: dict[str, Any], kind: str) -> Graph:
    base: FluxFiles = files["base"]
    models: Path = files["models"]
    g = Graph()
    g.add_node("diffusion.unet_loader", {"unet_name": f"tiny_{kind}.safetensors", "weight_dtype": "default"},
               id="unet")
    g.add_node("diffusion.dual_clip_loader", {"clip_name1": base.clip_l, "clip_name2": base.t5, "type": "flux"},
               id="clip")
    g.add_node("diffusion.vae_loader", {"vae_name": base.vae}, id="vae")
    g.add_node("diffusion.text_encode", {"text": PROMPT}, id="positive")
    g.add_node("diffusion.flux_guidance", {"guidance": GUIDANCE}, id="guidance")
    g.add_node("diffusion.conditioning_zero_out", {}, id="negative")
    g.add_node("image.load_path", {"path": str(models / "image.png")}, id="load")
    g.add_node("diffusion.model_sampling_flux", {"max_shift": 1.15, "base_shift": 0.5, "width": WIDTH,
                                                 "height": HEIGHT}, id="msf")
    g.add_node("diffusion.ksampler", {"seed": SEED, "steps": STEPS, "cfg": 1.0, "sampler_name": "euler",
                                      "scheduler": "simple", "denoise": 1.0}, id="sampler")
    links = [("clip", "CLIP", "positive", "clip"), ("positive", "CONDITIONING", "guidance", "conditioning"),
             ("positive", "CONDITIONING", "negative", "conditioning"), ("unet", "MODEL", "msf", "model"),
             ("msf", "MODEL", "sampler", "model")]
    if kind == "fill":
        g.add_node("image.load_path", {"path": str(models / "mask.png")}, id="mask_image")
        g.add_node("image.to_mask", {"channel": "red"}, id="mask")
        g.add_node("diffusion.inpaint_model_conditioning", {"noise_mask": False}, id="cond")
        links += [("mask_image", "IMAGE", "mask", "image"), ("mask", "MASK", "cond", "mask")]
    else:
        g.add_node("diffusion.instruct_pix2pix_conditioning", {}, id="cond")
    g.add_node("diffusion.empty_sd3_latent", {"width": WIDTH, "height": HEIGHT, "batch_size": 1}, id="latent")
    links += [("guidance", "CONDITIONING", "cond", "positive"), ("negative", "CONDITIONING", "cond", "negative"),
              ("vae", "VAE", "cond", "vae"), ("load", "IMAGE", "cond", "pixels"),
              ("cond", "positive", "sampler", "positive"), ("cond", "negative", "sampler", "negative"),
              ("latent", "LATENT", "sampler", "latent_image")]
    for link in links:
        g.connect(*link)
    return g


def _run(files: dict[str, Any], kind: str, tmp_path: Path) -> Any:
    executor = Executor(full_registry(), device="cpu", output_dir=tmp_path / "out",
                        settings={"models_dir": str(files["models"]), "include_demo_models": False})
    outputs = ["load", "unet", "cond", "sampler", "positive"] + (["mask"] if kind == "fill" else [])
    report = executor.run(_graph(files, kind), outputs=outputs)
    report.raise_for_status()
    return report.results


def _reference_vae(files: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    from nodes.diffusion.models.vae import FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR

    dcfg = {
        "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 1,
        "block_out_channels": [32] * 4, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "norm_num_groups": 32,
        "scaling_factor": FLUX_SCALING_FACTOR, "shift_factor": FLUX_SHIFT_FACTOR,
        "use_quant_conv": False, "use_post_quant_conv": False,
    }  # fmt: skip
    vae = AutoencoderKL(**dcfg).eval()
    base: FluxFiles = files["base"]
    sd = load_file(files["models"] / "vae" / base.vae)
    result = vae.load_state_dict(convert_ldm_vae_checkpoint(dict(sd), dcfg), strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result
    return vae


def _scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


def _prompt(results: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The prompt as diffusers takes it precomputed (our encoders match transformers': test_flux_pipeline)."""
    c = results["positive"]["CONDITIONING"]
    return {"prompt_embeds": c.context, "pooled_prompt_embeds": c.pooled}


def test_fill_matches_flux_fill_pipeline(files: dict[str, Any], tmp_path: Path) -> None:
    from diffusers import FluxFillPipeline

    torch.set_num_threads(1)
    results = _run(files, "fill", tmp_path)
    model = results["unet"]["MODEL"]
    assert model.latent_channels == 16 and model.concat_channels == 80
    ours = results["sampler"]["LATENT"].samples
    pixels, mask = results["load"]["IMAGE"], results["mask"]["MASK"]
    pipe = FluxFillPipeline(scheduler=_scheduler(), vae=_reference_vae(files), text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, transformer=files["fill"])
    pipe.set_progress_bar_config(disable=True)
    noise = initial_noise((1, 16, HEIGHT // 8, WIDTH // 8), SEED)

    def reference(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = pipe(**_prompt(results), image=image, mask_image=mask[:, None], height=HEIGHT, width=WIDTH,
                       num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=pack_latents(noise),
                       output_type="latent").images
        return unpack_latents(out, HEIGHT // 8, WIDTH // 8)

    ref = reference(pixels.permute(0, 3, 1, 2))
    assert ours.shape == ref.shape and float(ours.std()) > 0.1
    rel_close(ours, ref)
    print(f"fill: max rel diff {float((ours - ref).abs().max() / ref.abs().max()):.2e}")
    other = reference(1 - pixels.permute(0, 3, 1, 2))  # not vacuous: the masked image reaches the model
    assert (other - ref).abs().max() > 100 * (ours - ref).abs().max()


def test_canny_matches_flux_control_pipeline(files: dict[str, Any], tmp_path: Path) -> None:
    from diffusers import FluxControlPipeline

    torch.set_num_threads(1)
    results = _run(files, "canny", tmp_path)
    model = results["unet"]["MODEL"]
    assert model.latent_channels == 16 and model.concat_channels == 16
    ours = results["sampler"]["LATENT"].samples
    pixels = results["load"]["IMAGE"]
    pipe = FluxControlPipeline(scheduler=_scheduler(), vae=_reference_vae(files), text_encoder=None,
                               tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=files["canny"])
    pipe.set_progress_bar_config(disable=True)
    noise = initial_noise((1, 16, HEIGHT // 8, WIDTH // 8), SEED)

    def reference(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # a tensor control image is taken as is, in [-1, 1]
            out = pipe(**_prompt(results), control_image=image * 2 - 1, height=HEIGHT, width=WIDTH,
                       num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=pack_latents(noise),
                       output_type="latent", generator=torch.Generator().manual_seed(0)).images
        return unpack_latents(out, HEIGHT // 8, WIDTH // 8)

    ref = reference(pixels.permute(0, 3, 1, 2))
    assert ours.shape == ref.shape and float(ours.std()) > 0.1
    rel_close(ours, ref)
    print(f"canny: max rel diff {float((ours - ref).abs().max() / ref.abs().max()):.2e}")
    other = reference(1 - pixels.permute(0, 3, 1, 2))  # not vacuous: the control image reaches the model
    assert (other - ref).abs().max() > 100 * (ours - ref).abs().max()


def test_fill_model_input_is_hand_computed_concat(files: dict[str, Any], tmp_path: Path) -> None:
    """The transformer sees [x, masked-image latent, mask folded 8x8 into 64 channels] before patchify."""
    from nodes.diffusion.pack.common import sampling_inputs

    results = _run(files, "fill", tmp_path)
    model = results["unet"]["MODEL"]
    pos, _, latent = (results["cond"][k] for k in ("positive", "negative", "latent"))
    pixels, mask = results["load"]["IMAGE"], results["mask"]["MASK"]
    cond, _ = sampling_inputs(model, pos, None, 1, HEIGHT, WIDTH, None, 8, latent)
    seen: list[torch.Tensor] = []
    handle = model.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x = torch.randn(1, 16, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(1))
    try:
        with torch.inference_mode():
            model.denoiser()(x, torch.tensor([0.7]), **cond)
    finally:
        handle.remove()
    grey = pixels.clone()
    grey[mask.bool()] = 0.5
    from nodes.diffusion.checkpoint import load_vae_file

    ae = load_vae_file(files["models"] / "vae" / files["base"].vae)
    with torch.inference_mode():
        masked = ae.encode(grey)
    h, w = HEIGHT // 8, WIDTH // 8
    folded = torch.zeros(1, 64, h, w)
    for dy in range(8):
        for dx in range(8):
            folded[0, dy * 8 + dx] = mask[0, dy::8, dx::8]
    torch.testing.assert_close(seen[0], torch.cat([x, masked, folded], dim=1), rtol=1e-5, atol=1e-5)


def test_ordinary_flux_model_ignores_the_inpaint_conditioning(files: dict[str, Any], tmp_path: Path) -> None:
    """As in ComfyUI, a model without extra channels (dev) samples an inpaint conditioning like a plain one."""
    from nodes.diffusion.flux_runtime import FluxModel
    from nodes.diffusion.pack.common import sampling_inputs
    from nodes.diffusion.split_files import load_diffusion_model_file

    results = _run(files, "fill", tmp_path)
    pos = results["cond"]["positive"]
    dev = load_diffusion_model_file(files["models"] / "diffusion_models" / files["base"].unet)
    assert isinstance(dev, FluxModel) and dev.concat_channels == 0
    cond, _ = sampling_inputs(dev, pos, None, 1, HEIGHT, WIDTH, None, 8, results["cond"]["latent"])
    assert "concat" not in cond
