"""TAESD preview decoders: parity with diffusers' ``AutoencoderTiny`` decoder, key layouts, the
vae_approx lookup, and the shipped demo decoder's previews against the real VAE decode.

Parity tolerance: our module and diffusers' run the same convolutions; the bound is the float32
rounding of the chain (3x3 convs over ``width * 9`` inputs, 3 per block, all stages in a row).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nodes.diffusion.models.taesd import TAESDConfig, TAESDDecoder, config_from_state, decoder_from_state
from nodes.diffusion.preview import find_preview_decoder, load_decoder, previewer, taesd_preview
from nodes.shared.model_paths import DEMO_DIR
from tests.tolerance import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEMO_PREVIEW = DEMO_DIR / "vae_approx" / "nodegraph-shapes-v1_taesd_decoder.safetensors"


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5))


@pytest.mark.parametrize(("channels", "blocks"), [(4, (3, 3, 3, 1)), (16, (1, 2, 1))])
def test_matches_diffusers_autoencoder_tiny_decoder(channels: int, blocks: tuple[int, ...]) -> None:
    from diffusers import AutoencoderTiny

    width = 16
    n = len(blocks)
    ref = AutoencoderTiny(in_channels=3, out_channels=3, latent_channels=channels,
                          encoder_block_out_channels=(8,) * n, decoder_block_out_channels=(width,) * n,
                          num_encoder_blocks=(1,) * n, num_decoder_blocks=blocks).eval()
    _randomise(ref, 0)
    ours = decoder_from_state({k: v for k, v in ref.state_dict().items() if k.startswith("decoder.")})
    assert ours.config == TAESDConfig(channels, width, blocks)
    z = torch.randn(2, channels, 8, 6, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        expected = ref.decode(z).sample
        got = ours(z) * 2 - 1  # ours is 0..1 (TAESD's range), diffusers maps it to -1..1
    assert got.shape == (2, 3, 8 * 2 ** (len(blocks) - 1), 6 * 2 ** (len(blocks) - 1))
    assert_close(got, expected, reduction=width * 9, depth=3 * sum(blocks) + len(blocks) + 1)


def test_original_layout_and_prefixes_load_the_same_decoder() -> None:
    model = TAESDDecoder(TAESDConfig(4, 8, (2, 2, 1)))
    _randomise(model, 2)
    sd = model.state_dict()
    assert "1.weight" in sd and "3.conv.0.weight" in sd and "12.weight" in sd  # TAESD's Sequential numbering
    assert config_from_state(sd) == model.config
    z = torch.randn(1, 4, 5, 7)
    with torch.no_grad():
        expected = model(z)
        for state in (sd, {"taesd_decoder." + k: v for k, v in sd.items()}):
            assert torch.equal(decoder_from_state(state)(z), expected)


def _fallback(denoised: torch.Tensor) -> str:
    return "projection"


def test_not_a_taesd_file_is_refused_and_previews_fall_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a TAESD decoder"):
        decoder_from_state({"foo.weight": torch.zeros(3, 3)})
    approx = tmp_path / "vae_approx"
    approx.mkdir()
    save_file({"encoder.weight": torch.zeros(2, 2)}, approx / "taesd_decoder.safetensors")
    settings = {"models_dir": str(tmp_path), "include_demo_models": False}
    path = find_preview_decoder(settings, "sd1")
    assert path == approx / "taesd_decoder.safetensors" and load_decoder(path) is None
    model = SimpleNamespace(rules=SimpleNamespace(name="sd1"), latent_channels=4)
    assert previewer(settings, model, _fallback)(torch.zeros(1, 4, 8, 8)) == "projection"
    # SDXL looks for its own decoder; none here.
    assert find_preview_decoder(settings, "sdxl") is None


def test_channel_mismatch_falls_back(tmp_path: Path) -> None:
    approx = tmp_path / "vae_approx"
    approx.mkdir()
    save_file(TAESDDecoder(TAESDConfig(16, 8, (1, 1))).state_dict(), approx / "taef1_decoder.safetensors")
    settings = {"models_dir": str(tmp_path), "include_demo_models": False}
    flux = SimpleNamespace(rules=SimpleNamespace(name="flux-dev"), latent_channels=16)
    preview = previewer(settings, flux, _fallback)
    z = torch.zeros(1, 16, 8, 8)
    assert preview(z).shape == (16, 16, 3)  # the TAESD picture (one x2 stage)
    # Throttled: a step right after a decode gets no new picture, the final step always does.
    assert preview(z) is None and preview(z, True).shape == (16, 16, 3)
    wrong = SimpleNamespace(rules=SimpleNamespace(name="flux-dev"), latent_channels=4)
    assert previewer(settings, wrong, _fallback)(torch.zeros(1, 4, 8, 8)) == "projection"


def test_large_latents_are_previewed_at_bounded_size() -> None:
    model = TAESDDecoder(TAESDConfig(4, 8, (1, 1, 1, 1)))
    img = taesd_preview(model, torch.zeros(2, 4, 128, 96))
    assert img.shape == (512, 384, 3) and img.dtype == np.uint8


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_demo_previews_resemble_the_vae_decode() -> None:
    """The KSampler's last preview (through the shipped TAESD decoder) against VAE Decode of its output,
    on the 12 evaluation prompts of the demo model (euler, 10 steps, CFG 5, seed = prompt index).

    Measured when shipped: 25.7 dB mean, 19.8 dB worst (the decoder's held-out PSNR on encoded shapes
    images: 25.0 dB).  Bars: 24 dB mean, 18 dB worst -- under the measurement by less than 2 dB, so a
    worse decoder fails, while float rounding between CPUs moves these figures by far less.  The
    latent->RGB projection it replaces scores 5.5 dB, and a decoder fed the wrong scaling or channel
    order scores below 15 dB, so neither can pass.
    """
    from nodes.diffusion.checkpoint import load_checkpoint
    from nodes.diffusion.pack.sampler import ksampler, latent_preview
    from nodes.diffusion.runtime import Latent
    from training.common import CHECKPOINT_PATH, EVAL_PROMPTS

    assert DEMO_PREVIEW.stat().st_size < 1_000_000
    torch.set_num_threads(1)
    ckpt = load_checkpoint(CHECKPOINT_PATH)
    negative = ckpt.clip.encode("")
    scores, baseline = [], []
    previews: list[np.ndarray] = []
    ctx = SimpleNamespace(settings={}, progress=lambda s, n, p: previews.append(p), services={}, device="cpu",
                          workflow=None, stats=lambda *a: None)
    for i, prompt in enumerate(EVAL_PROMPTS):
        out = ksampler.fn(ctx, ckpt.model, seed=i, steps=10, cfg=5.0, sampler_name="euler", scheduler="normal",
                          positive=ckpt.clip.encode(prompt), negative=negative,
                          latent_image=Latent(torch.zeros(1, 4, 16, 16), downscale=4), denoise=1.0)
        decoded = (ckpt.vae.decode(out.samples)[0].numpy() * 255 + 0.5).astype(np.uint8)
        assert previews[-1].shape == decoded.shape == (64, 64, 3)  # a TAESD picture, not the 16x16 projection
        scores.append(_psnr(previews[-1], decoded))
        projection = np.kron(latent_preview(out.samples), np.ones((4, 4, 1), np.uint8))
        baseline.append(_psnr(projection, decoded))
    assert len(scores) == 12
    assert np.mean(scores) >= 24.0, (scores, baseline)
    assert min(scores) >= 18.0, scores
    assert np.mean(baseline) < 15.0, baseline  # the fallback really is much worse
