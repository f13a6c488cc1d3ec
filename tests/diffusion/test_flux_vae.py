"""FLUX ``ae`` VAE (16 latent channels, no quant convs, scale 0.3611 / shift 0.1159) vs diffusers' AutoencoderKL.

The tiny random VAE is written in the BFL ``ae`` key layout (LDM names, no ``quant_conv``),
converted with diffusers' own LDM converter and loaded strictly into an ``AutoencoderKL``
built with the FLUX config (``latent_channels=16, use_quant_conv=False,
use_post_quant_conv=False``): no missing or unexpected key proves the layout.
"""

from __future__ import annotations

import os

import pytest
import torch

from nodes.diffusion.models.vae import (
    FLUX_SCALING_FACTOR,
    FLUX_SHIFT_FACTOR,
    AutoencoderKL,
    VAEConfig,
    build_vae_from_state_dict,
    convert_diffusers_vae_to_ldm,
    infer_vae_config,
    is_diffusers_vae,
)
from tests.diffusion.flux_fixtures import assert_rel_close, randomize_

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CFG = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=16, embed_dim=16, use_quant_conv=False,
                scaling_factor=FLUX_SCALING_FACTOR, shift_factor=FLUX_SHIFT_FACTOR)  # fmt: skip
REL = 1e-4  # fp32 convolutions; observed ~1e-6


def _flux_ae_sd(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in randomize_(AutoencoderKL(CFG), seed).state_dict().items()}


def test_config_from_ae_keys() -> None:
    sd = _flux_ae_sd()
    assert not any("quant_conv" in k for k in sd)
    assert infer_vae_config(sd, FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR) == CFG


def test_matches_diffusers_flux_vae() -> None:
    from diffusers import AutoencoderKL as DiffusersVAE
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = _flux_ae_sd(seed=2)
    dcfg = {
        "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 1,
        "block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 32,
        "scaling_factor": FLUX_SCALING_FACTOR, "shift_factor": FLUX_SHIFT_FACTOR,
        "use_quant_conv": False, "use_post_quant_conv": False,
    }  # fmt: skip
    ref = DiffusersVAE(**dcfg).eval()
    result = ref.load_state_dict(convert_ldm_vae_checkpoint(dict(sd), dcfg), strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result

    ours = build_vae_from_state_dict(sd, FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR)
    g = torch.Generator().manual_seed(3)
    img = torch.rand(2, 3, 32, 24, generator=g) * 2 - 1
    with torch.no_grad():
        lat = ours.encode(img)
        # What FluxPipeline does: (mean - shift) * scale in, z / scale + shift out.
        expected_lat = (ref.encode(img).latent_dist.mean - FLUX_SHIFT_FACTOR) * FLUX_SCALING_FACTOR
        assert_rel_close(lat, expected_lat, REL)
        dec = ours.decode(lat)
        assert_rel_close(dec, ref.decode(lat / FLUX_SCALING_FACTOR + FLUX_SHIFT_FACTOR).sample, REL)
    assert lat.shape == (2, 16, 16, 12) and dec.shape == img.shape


def test_diffusers_layout_converts_back_to_ae_layout() -> None:
    """diffusers' LDM->diffusers conversion followed by ours is the identity (attention kept 2-D)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = _flux_ae_sd(seed=4)
    dcfg = {"down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}
    diffusers_sd = convert_ldm_vae_checkpoint(dict(sd), dcfg)
    assert is_diffusers_vae(diffusers_sd) and not is_diffusers_vae(sd)
    back = convert_diffusers_vae_to_ldm(diffusers_sd)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key].reshape(value.shape), value), key
    ours = build_vae_from_state_dict(back, FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR)
    assert ours.config == CFG
    with pytest.raises(ValueError, match="no LDM counterpart"):
        convert_diffusers_vae_to_ldm({**diffusers_sd, "encoder.mystery.weight": torch.zeros(1)})
