"""SD VAE (LDM AutoencoderKL layout): parity with diffusers, config inference, tiling.

A tiny random VAE (ch 32, ch_mult (1, 2), 1 res block, z 4) is saved with the
``first_stage_model.`` prefix, converted with diffusers' own
``convert_ldm_vae_checkpoint`` and loaded strictly into diffusers' AutoencoderKL:
no missing/unexpected keys proves the fixture (and hence our naming) is the real
LDM layout. Outputs must match to 1e-4 (fp32).
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.vae import (
    SDXL_SCALING_FACTOR,
    AutoencoderKL,
    VAEConfig,
    build_vae_from_state_dict,
    infer_vae_config,
)
from tests.tolerance import assert_close

PREFIX = "first_stage_model."
CFG = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
# Rounding bound (tests/tolerance.py): longest reduction a 3x3 conv over 64 channels; ~10 blocks (res blocks,
# mid attention, in/out/resampling convs) add their errors along the encoder or the decoder.
VAE_ROUNDING = {"reduction": 64 * 9, "depth": 10}


def make_ldm_vae_checkpoint(seed: int = 0, linear_attn: bool = False) -> dict[str, torch.Tensor]:
    """Random tiny VAE in the original layout (every tensor perturbed, incl. norms and biases)."""
    torch.manual_seed(seed)
    model = AutoencoderKL(CFG)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("norm.weight") or ".norm" in k and k.endswith(".weight"):
            v = 1.0 + 0.1 * torch.randn_like(v)
        elif k.endswith(".bias"):
            v = 0.05 * torch.randn_like(v)
        if linear_attn and ".attn_1." in k and k.endswith(".weight") and v.ndim == 4:
            v = v[:, :, 0, 0].clone()
        sd[PREFIX + k] = v
    return sd


def _strip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PREFIX): v for k, v in sd.items()}


def _image(h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    """A smooth test image in [-1, 1] (gradients + a blob), batch of 2."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    base = torch.stack([xx, yy, torch.exp(-4 * (xx**2 + yy**2)) * 2 - 1])
    noise = 0.1 * torch.randn(2, 3, h, w, generator=g)
    return (base.unsqueeze(0) + noise).clamp(-1, 1)


def test_infer_config() -> None:
    cfg = infer_vae_config(_strip(make_ldm_vae_checkpoint()), scaling_factor=SDXL_SCALING_FACTOR)
    assert cfg == VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4,
                            scaling_factor=SDXL_SCALING_FACTOR)
    assert cfg.downscale == 2


@pytest.mark.parametrize("linear_attn", [False, True])
def test_matches_diffusers(linear_attn: bool) -> None:
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ckpt = make_ldm_vae_checkpoint(linear_attn=linear_attn)
    dcfg = {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 32, "scaling_factor": 0.18215,
    }
    ref = diffusers.AutoencoderKL(**dcfg).eval()
    result = ref.load_state_dict(convert_ldm_vae_checkpoint(ckpt, dcfg), strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result

    ours = build_vae_from_state_dict(_strip(ckpt), scaling_factor=0.18215)
    assert not any(p.is_meta for p in ours.parameters())
    img = _image()
    with torch.no_grad():
        lat = ours.encode(img)
        ref_mean = ref.encode(img).latent_dist.mean
        assert_close(lat, ref_mean * 0.18215, **VAE_ROUNDING)
        dec = ours.decode(lat)
        assert_close(dec, ref.decode(lat / 0.18215).sample, **VAE_ROUNDING)
    assert lat.shape == (2, 4, 16, 16) and dec.shape == img.shape
    assert lat.std() > 1e-2 and dec.std() > 1e-2


def test_scaling_and_shift() -> None:
    sd = _strip(make_ldm_vae_checkpoint())
    a = build_vae_from_state_dict(sd, scaling_factor=1.0)
    b = build_vae_from_state_dict(sd, scaling_factor=0.5, shift_factor=0.25)
    img = _image()
    with torch.no_grad():
        za, zb = a.encode(img), b.encode(img)
        assert_close(zb, (za - 0.25) * 0.5, scale=float(za.abs().max()))  # elementwise, one or two roundings
        assert_close(b.decode(zb), a.decode(za), **VAE_ROUNDING)  # that rounding, through the decoder


def test_tiled_single_tile_is_exact() -> None:
    vae = build_vae_from_state_dict(_strip(make_ldm_vae_checkpoint()))
    with torch.no_grad():
        lat = vae.encode(_image())
        # one tile: the same network on the same input; only the blend weights' normalisation rounds
        assert_close(vae.decode_tiled(lat, tile=16, overlap=4), vae.decode(lat))
        assert_close(vae.encode_tiled(_image(), tile=32, overlap=8), lat)


def _texture(size: int = 64, seed: int = 0) -> torch.Tensor:
    """Statistically stationary image (smoothed noise): every tile has similar statistics, like real photos
    at the scales where tiling is used, unlike a global gradient."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.randn(2, 3, size + 2, size + 2, generator=g), 3, 1).clamp(-1, 1)


def test_tiled_approximates_untiled() -> None:
    """Tiles see only their own GroupNorm statistics and attention context, so tiled output approximates
    the untiled one; a tiny *random* VAE is far more sensitive to that than a trained one.

    Stated tolerances (relative mean abs error = mean|tiled - full| / std(full)), on 32x32 latents:
    decode with tile 24 / overlap 8 < 0.2 and less than half the error of naive non-overlapping tiles;
    encode with tile 48 / overlap 16 px < 0.15; error shrinks as tiles grow."""
    vae = build_vae_from_state_dict(_strip(make_ldm_vae_checkpoint()))
    img = _texture(64)
    with torch.no_grad():
        lat = vae.encode(img)
        full = vae.decode(lat)
        naive = torch.zeros_like(full)
        for y in (0, 16):
            for x in (0, 16):
                naive[:, :, 2 * y : 2 * y + 32, 2 * x : 2 * x + 32] = vae.decode(lat[:, :, y : y + 16, x : x + 16])
        small = vae.decode_tiled(lat, tile=20, overlap=8)
        tiled = vae.decode_tiled(lat, tile=24, overlap=8)
        enc_tiled = vae.encode_tiled(img, tile=48, overlap=16)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().mean() / b.std())

    assert tiled.shape == full.shape and enc_tiled.shape == lat.shape
    assert rel(tiled, full) < 0.2
    assert rel(tiled, full) < 0.5 * rel(naive, full)
    assert rel(tiled, full) < rel(small, full)
    assert rel(enc_tiled, lat) < 0.15


def test_tiled_blending_weights_partition_unity() -> None:
    """With an exactly translation-equivariant per-pixel function, tiling must be exact anywhere."""
    from nodes.diffusion.models.vae import _tiled

    x = torch.randn(1, 3, 37, 53)
    fn = lambda t: torch.repeat_interleave(torch.repeat_interleave(t * 2 + 1, 4, dim=2), 4, dim=3)
    out = _tiled(fn, x, tile=16, overlap=6, factor=4, upscale=True)
    assert_close(out, fn(x), reduction=4)  # a weighted mean of at most 4 overlapping tiles
    down = lambda t: torch.nn.functional.avg_pool2d(t, 4)
    y = torch.randn(1, 3, 64, 96)
    assert_close(_tiled(down, y, tile=30, overlap=9, factor=4, upscale=False), down(y), reduction=4 * 16)
