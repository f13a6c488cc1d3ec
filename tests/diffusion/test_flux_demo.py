"""The FLUX-layout demo files, loaded through the app's split-file loaders, meet the demo quality bars.

The four files (``diffusion_models/``, ``text_encoders/`` x2 + the T5 tokenizer, ``vae/``) go
through ``load_diffusion_model_file``, ``load_text_encoder_part`` / ``flux_text_encoder`` and
``load_vae_file`` -- what Load Diffusion Model, DualCLIPLoader (type flux) and Load VAE run --
and are graded by the dataset's checker exactly as ``test_demo_models.py`` grades the UNet demo
(12 prompts x 3 seeds, euler 10 steps, the model's default CFG; bars: object colour >= 95 % by
majority, background 100 %, shape >= 70 %).  Position and size words are graded on the
held-out prompt set of :func:`training.common.held_out_prompts` (combinations never seen in
training), one seed each.
"""

from __future__ import annotations

import os

import pytest
import torch

from nodes.diffusion.checkpoint import load_vae_file
from nodes.diffusion.models.loading import load_state_dict
from nodes.diffusion.split_files import (
    flux_text_encoder,
    identify_file,
    load_diffusion_model_file,
    load_text_encoder_part,
)
from tests.diffusion.demo_grading import grade_at_defaults
from tests.diffusion.threads import one_thread_per_module  # noqa: F401 (autouse fixture)
from tests.tolerance import assert_close
from training.flux_demo import (
    AE_PATH,
    CLIP_L_PATH,
    FLUX_DEMO_FILES,
    FLUX_MODEL_PATH,
    T5_MIN_TOKENS,
    T5_PATH,
    ae_state,
)

pytestmark = pytest.mark.skipif(not all(p.exists() for p in FLUX_DEMO_FILES), reason="FLUX demo not exported")


@pytest.fixture(scope="module")
def demo():
    model = load_diffusion_model_file(FLUX_MODEL_PATH)
    clip = flux_text_encoder([load_text_encoder_part(CLIP_L_PATH), load_text_encoder_part(T5_PATH)], "cpu")
    vae = load_vae_file(AE_PATH)
    return model, clip, vae


def test_files_are_split_flux_layouts_within_budget():
    kinds = {p.name: identify_file(p).kind for p in (FLUX_MODEL_PATH, CLIP_L_PATH, T5_PATH, AE_PATH)}
    assert list(kinds.values()) == ["flux", "clip", "t5", "vae"], kinds
    sd, meta = load_state_dict(FLUX_MODEL_PATH)
    assert "double_blocks.0.img_attn.qkv.weight" in sd and "guidance_in.in_layer.weight" not in sd
    for path in (FLUX_MODEL_PATH, CLIP_L_PATH, T5_PATH, AE_PATH):
        assert all(t.dtype == torch.float16 for t in load_state_dict(path)[0].values()), path.name
    vae_sd, _ = load_state_dict(AE_PATH)
    assert "post_quant_conv.weight" not in vae_sd and vae_sd["encoder.conv_out.weight"].shape[0] == 32
    assert sum(os.path.getsize(p) for p in FLUX_DEMO_FILES) <= 20e6


def test_loaders_read_the_demo_metadata(demo):
    model, clip, vae = demo
    assert model.rules.default_size == 64 and not model.has_guidance
    assert model.latent_channels == 16 and vae.latent_channels == 16
    assert clip.t5_min_tokens == T5_MIN_TOKENS  # the T5 file's nodegraph.t5.min_tokens
    assert clip.clip_l.config.activation == "gelu"  # the CLIP file's nodegraph.clip.activation
    # VAE Decode and the sampler agree on the latent scaling (the VAE file says it, nothing is guessed)
    assert not vae.scaling_guessed
    assert vae.vae.config.scaling_factor == pytest.approx(model.rules.vae_scaling_factor)
    assert vae.vae.config.shift_factor == pytest.approx(model.rules.vae_shift_factor)


def test_ae_conversion_reconstructs_like_the_unet_demo_vae():
    """The ae file is the UNet demo's VAE with its 1x1 quant convs folded in: the same images come out."""
    from nodes.diffusion.models.vae import AutoencoderKL, infer_vae_config
    from training.common import CHECKPOINT_PATH, images_to_tensor
    from training.shapes import generate_batch

    sd_vae = load_vae_file(CHECKPOINT_PATH).vae.float()
    folded = ae_state()  # float32 fold of the shipped fp16 weights; the file holds it rounded to fp16
    file_sd, _ = load_state_dict(AE_PATH)
    assert set(file_sd) == set(folded)
    assert all(torch.equal(file_sd[k], folded[k].half()) for k in folded)
    assert not folded["decoder.conv_in.weight"][:, 4:].any()  # the 12 extra latent channels are not read
    ae = AutoencoderKL(infer_vae_config(folded, 1.0, 0.0))
    ae.load_state_dict(folded)
    x = images_to_tensor(generate_batch(9800, 4).images)
    with torch.no_grad():
        ref = sd_vae.decode(sd_vae.encode(x))
        z = ae.encode(x)
        out = ae.decode(z)
    assert z.shape[1] == 16 and not z[:, 4:].any()
    # float32 both ways, the fold only reorders sums: rounding of the deepest path (~20 convs of 576 terms)
    assert_close(out, ref, reduction=64 * 9, depth=20)


@pytest.fixture(scope="module")
def graded(demo):
    return grade_at_defaults(*demo)


def test_object_and_background_colours_follow_the_prompt(graded):
    assert graded["maj_color_ok"] >= 0.95, graded
    assert graded["img_background_ok"] == 1.0, graded


def test_shape_is_recognisable(graded):
    assert graded["img_shape_ok"] >= 0.70, graded


def test_position_and_size_words_are_followed_on_held_out_prompts(demo):
    from training.common import evaluate_positions

    model, clip, vae = demo
    res = evaluate_positions(model, clip, vae, seeds=(0,), n=40, cfg=model.rules.default_cfg,
                             scheduler=model.rules.default_scheduler)
    assert res["position_ok"] >= 0.70, res
    assert res["size_ok"] >= 0.70, res
