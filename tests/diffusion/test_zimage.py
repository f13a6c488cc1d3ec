"""Z-Image transformer: parity with diffusers' ZImageTransformer2DModel on a tiny random model.

Our model loads ComfyUI-layout keys made by our converter (checked against diffusers' own
single-file converter) and the diffusers keys directly.  The reference is called the way
ZImagePipeline calls it: lists of per-item latents and real caption tokens, ``t = 1 - sigma``,
output negated.  Image token counts that are not multiples of 32 and captions of different
lengths in one batch exercise the pad tokens, the per-item positions and the key masks.
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.zimage import (
    ZImageConfig,
    ZImageTransformer,
    axes_dims_for_head_dim,
    build_zimage_from_state_dict,
    convert_diffusers_zimage_to_comfy,
    detect_zimage_layout,
    zimage_config_from_state_dict,
)
from tests.diffusion.flux_fixtures import assert_rel_close, randomize_

REL = 1e-4
CAP = 48


@pytest.fixture(scope="module")
def reference():
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    model = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, qk_norm=True, cap_feat_dim=CAP, axes_dims=[8, 12, 12], axes_lens=[256, 64, 64],
    )  # fmt: skip
    randomize_(model, 3)
    with torch.no_grad():  # the pad tokens are zeros at init; make them matter
        model.x_pad_token.normal_(generator=torch.Generator().manual_seed(4))
        model.cap_pad_token.normal_(generator=torch.Generator().manual_seed(5))
    return model.eval()


def diffusers_velocity(model, x, sigma, captions: list[torch.Tensor]) -> torch.Tensor:
    """ZImagePipeline's transformer call: per-item lists, t = 1 - sigma, velocity = -output."""
    with torch.no_grad():
        out = model(list(x.unsqueeze(2).unbind(0)), 1 - sigma, captions, return_dict=False)[0]
    return -torch.stack(out).squeeze(2)


def _inputs(seed: int, h: int = 8, w: int = 6, lens: tuple[int, ...] = (7, 7)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lens), 16, h, w, generator=g)
    sigma = torch.tensor([0.85, 0.3, 0.6][: len(lens)])
    width = max(lens)
    context = torch.randn(len(lens), width, CAP, generator=g)
    mask = torch.zeros(len(lens), width, dtype=torch.bool)
    for i, n in enumerate(lens):
        mask[i, :n] = True
    return x, sigma, context, mask


def test_config_inferred_from_shapes(reference) -> None:
    sd = convert_diffusers_zimage_to_comfy(reference.state_dict())
    assert zimage_config_from_state_dict(sd) == ZImageConfig(
        in_channels=16, dim=64, num_layers=2, num_refiner_layers=1, num_heads=2, ffn_hidden=170, cap_feat_dim=CAP,
        adaln_dim=64, t_mid_dim=1024, axes_dims=(8, 12, 12),
    )  # fmt: skip
    assert axes_dims_for_head_dim(128) == (32, 48, 48)


@pytest.mark.parametrize("source", ["comfy", "diffusers"])
def test_velocity_matches_diffusers(reference, source: str) -> None:
    sd = reference.state_dict()
    ours = build_zimage_from_state_dict(convert_diffusers_zimage_to_comfy(sd) if source == "comfy" else sd)
    x, sigma, context, _ = _inputs(seed=7)
    expected = diffusers_velocity(reference, x, sigma, list(context))
    with torch.no_grad():
        actual = ours(x, sigma, context)
    assert actual.shape == x.shape
    assert_rel_close(actual, expected, REL)


def test_captions_of_different_lengths(reference) -> None:
    """5 and 40 real tokens pad to 32 and 64: different image positions per item and masked keys."""
    ours = build_zimage_from_state_dict(convert_diffusers_zimage_to_comfy(reference.state_dict()))
    x, sigma, context, mask = _inputs(seed=8, h=10, w=8, lens=(5, 40, 32))
    expected = diffusers_velocity(reference, x, sigma, [context[i][mask[i]] for i in range(3)])
    with torch.no_grad():
        actual = ours(x, sigma, context, mask)
        alone = ours(x[:1], sigma[:1], context[:1, :5])
    assert_rel_close(actual, expected, REL)
    assert_rel_close(actual[:1], alone, 1e-5)


def test_comfy_names_match_diffusers_converter(reference) -> None:
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    ref_sd = reference.state_dict()
    comfy = convert_diffusers_zimage_to_comfy(ref_sd)
    assert detect_zimage_layout(comfy) == "comfy" and detect_zimage_layout(ref_sd) == "diffusers"
    assert "layers.0.attention.qkv.weight" in comfy and "x_embedder.weight" in comfy
    prefixed = {f"model.diffusion_model.{k}": v for k, v in comfy.items()}
    prefixed["model.diffusion_model.norm_final.weight"] = torch.ones(64)  # carried by some files, unused
    back = convert_z_image_transformer_checkpoint_to_diffusers(prefixed)
    assert set(back) == set(ref_sd)
    for key, value in back.items():
        assert torch.equal(value, ref_sd[key]), key
    # and we accept (and drop) the unused norm_final as well
    build_zimage_from_state_dict({**comfy, "norm_final.weight": torch.ones(64)})


def test_odd_sides_padded(reference) -> None:
    ours = build_zimage_from_state_dict(reference.state_dict())
    x, sigma, context, _ = _inputs(seed=9, h=7, w=9)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="circular")
    with torch.no_grad():
        out = ours(x, sigma, context)
        full = ours(padded, sigma, context)
    assert out.shape == x.shape
    assert_rel_close(out, full[:, :, :7, :9], 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float8_e4m3fn], ids=["fp16", "fp8"])
def test_low_precision_storage(dtype, reference) -> None:
    comfy = {k: v.to(dtype) for k, v in convert_diffusers_zimage_to_comfy(reference.state_dict()).items()}
    stored = build_zimage_from_state_dict(comfy)
    assert all(p.dtype == dtype for p in stored.parameters())
    upcast = build_zimage_from_state_dict({k: v.float() for k, v in comfy.items()})
    x, sigma, context, _ = _inputs(seed=10)
    with torch.no_grad():
        a = stored(x, torch.tensor(0.4), context)
        b = upcast(x, torch.tensor([0.4, 0.4]), context)
    assert a.dtype == torch.float32
    assert_rel_close(a, b, 1e-5)


def test_bad_input(reference) -> None:
    ours = build_zimage_from_state_dict(reference.state_dict())
    x, sigma, context, mask = _inputs(seed=11)
    with pytest.raises(ValueError, match="16 latent channels, got 4"):
        ours(x[:, :4], sigma, context)
    with pytest.raises(ValueError, match="48-wide text features, got 4096"):
        ours(x, sigma, torch.zeros(2, 3, 4096))
    with pytest.raises(ValueError, match="at least one caption token"):
        ours(x, sigma, context, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="not a Z-Image"):
        build_zimage_from_state_dict({"joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(1)})
    sd = convert_diffusers_zimage_to_comfy(reference.state_dict())
    del sd["t_embedder.mlp.2.weight"]
    with pytest.raises(ValueError, match="'t_embedder.mlp.2.weight' is missing"):
        build_zimage_from_state_dict(sd)


def test_meta_construction_and_training_init() -> None:
    cfg = ZImageConfig(dim=64, num_layers=1, num_refiner_layers=1, num_heads=2, ffn_hidden=96, cap_feat_dim=8,
                       adaln_dim=64, t_mid_dim=32, axes_dims=(8, 12, 12))  # fmt: skip
    with torch.device("meta"):
        assert all(p.is_meta for p in ZImageTransformer(cfg).parameters())
    model = ZImageTransformer(cfg).init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(torch.randn(1, 16, 4, 4), torch.tensor([0.5]), torch.randn(1, 3, 8))
    assert out.shape == (1, 16, 4, 4) and torch.isfinite(out).all()
