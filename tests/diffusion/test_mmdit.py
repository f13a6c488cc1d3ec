"""SD3 / SD3.5 MMDiT: parity with diffusers' SD3Transformer2DModel for 3.0, 3.5-large and 3.5-medium (MMDiT-X).

The reference is a random tiny diffusers model.  Our model loads (a) Stability-layout keys
made by our converter and (b) the diffusers keys directly.  That our converter produces the
real Stability layout is checked with diffusers' own original->diffusers converter, which
must give back every reference tensor unchanged.
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.mmdit import (
    MMDiT,
    MMDiTConfig,
    build_mmdit_from_state_dict,
    convert_diffusers_mmdit_to_original,
    detect_mmdit_layout,
    mmdit_config_from_state_dict,
)
from tests.diffusion.flux_fixtures import assert_rel_close, randomize_

REL = 1e-4  # fp32, a few dozen accumulated matmuls; observed differences are ~1e-6 relative

#: Tiny versions of the three released shapes.  3.0 has no qk-norm, so its head width (64) is
#: the fixed SD3 value; the 3.5 variants use 32-wide heads, read back from the qk-norm weights.
VARIANTS = {
    "sd3.0": dict(attention_head_dim=64, num_attention_heads=2, qk_norm=None, dual_attention_layers=()),
    "sd3.5-large": dict(attention_head_dim=32, num_attention_heads=4, qk_norm="rms_norm", dual_attention_layers=()),
    "sd3.5-medium": dict(attention_head_dim=32, num_attention_heads=4, qk_norm="rms_norm",
                         dual_attention_layers=(0, 1)),
}  # fmt: skip
CTX, POOLED = 40, 24


def diffusers_sd3(variant: str, seed: int):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    model = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, num_layers=3, joint_attention_dim=CTX,
        caption_projection_dim=128, pooled_projection_dim=POOLED, out_channels=16, pos_embed_max_size=12,
        **VARIANTS[variant],
    )  # fmt: skip
    return randomize_(model, seed).eval()


def diffusers_velocity(model, x, sigma, context, pooled) -> torch.Tensor:
    """The transformer call of StableDiffusion3Pipeline: timestep = 1000 * sigma."""
    with torch.no_grad():
        return model(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                     timestep=sigma * 1000, return_dict=False)[0]  # fmt: skip


def _inputs(seed: int, h: int = 8, w: int = 6, batch: int = 2, txt: int = 7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, h, w, generator=g)
    sigma = torch.tensor([0.9, 0.35])[:batch]
    return x, sigma, torch.randn(batch, txt, CTX, generator=g), torch.randn(batch, POOLED, generator=g)


@pytest.fixture(scope="module", params=list(VARIANTS))
def reference(request):
    return request.param, diffusers_sd3(request.param, seed=len(request.param))


def test_config_inferred_from_shapes(reference) -> None:
    variant, ref = reference
    spec = VARIANTS[variant]
    cfg = mmdit_config_from_state_dict(convert_diffusers_mmdit_to_original(ref.state_dict()))
    assert cfg == MMDiTConfig(
        patch_size=2, in_channels=16, hidden_size=128, num_heads=spec["num_attention_heads"], depth=3,
        context_in_dim=CTX, pooled_dim=POOLED, pos_embed_max_size=12, mlp_ratio=4.0,
        qk_norm=spec["qk_norm"] is not None, attn2_layers=spec["dual_attention_layers"], out_channels=16,
    )  # fmt: skip


@pytest.mark.parametrize("source", ["original", "diffusers"])
def test_velocity_matches_diffusers(reference, source: str) -> None:
    _, ref = reference
    sd = ref.state_dict()
    ours = build_mmdit_from_state_dict(convert_diffusers_mmdit_to_original(sd) if source == "original" else sd)
    x, sigma, context, pooled = _inputs(seed=7)
    expected = diffusers_velocity(ref, x, sigma, context, pooled)
    with torch.no_grad():
        actual = ours(x, sigma, context, pooled)
    assert actual.shape == x.shape
    assert_rel_close(actual, expected, REL)


def test_original_names_match_diffusers_converter(reference) -> None:
    """diffusers' original->diffusers converter maps our Stability dict back onto every reference tensor."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    _, ref = reference
    ref_sd = ref.state_dict()
    original = convert_diffusers_mmdit_to_original(ref_sd)
    assert detect_mmdit_layout(original) == "original" and detect_mmdit_layout(ref_sd) == "diffusers"
    # The converter pops from its argument and expects the checkpoint prefix.
    prefixed = {f"model.diffusion_model.{k}": v for k, v in original.items()}
    back = convert_sd3_transformer_checkpoint_to_diffusers(prefixed)
    assert set(back) == set(ref_sd)
    for key, value in back.items():
        assert torch.equal(value, ref_sd[key]), key


def test_last_block_text_stream_is_pre_only(reference) -> None:
    _, ref = reference
    original = convert_diffusers_mmdit_to_original(ref.state_dict())
    assert "joint_blocks.2.context_block.attn.proj.weight" not in original
    assert "joint_blocks.2.context_block.mlp.fc1.weight" not in original
    assert original["joint_blocks.2.context_block.adaLN_modulation.1.weight"].shape[0] == 2 * 128
    assert original["joint_blocks.1.context_block.adaLN_modulation.1.weight"].shape[0] == 6 * 128


def test_odd_sides_padded_and_position_window_centred(reference) -> None:
    """Odd sides: same as the circularly padded latent, cropped (ComfyUI's rule); a non-square
    latent uses the centred window of the position table, as diffusers does."""
    _, ref = reference
    ours = build_mmdit_from_state_dict(ref.state_dict())
    x, sigma, context, pooled = _inputs(seed=9, h=7, w=9)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="circular")
    with torch.no_grad():
        out = ours(x, sigma, context, pooled)
        full = ours(padded, sigma, context, pooled)
    assert out.shape == x.shape
    assert_rel_close(out, full[:, :, :7, :9], 1e-5)
    assert_rel_close(full, diffusers_velocity(ref, padded, sigma, context, pooled), REL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float8_e4m3fn], ids=["fp16", "fp8"])
def test_low_precision_storage_computes_in_input_dtype(dtype, reference) -> None:
    _, ref = reference
    original = {k: v.to(dtype) for k, v in convert_diffusers_mmdit_to_original(ref.state_dict()).items()}
    stored = build_mmdit_from_state_dict(original)
    assert all(p.dtype == dtype for p in stored.parameters())
    upcast = build_mmdit_from_state_dict({k: v.float() for k, v in original.items()})
    x, sigma, context, pooled = _inputs(seed=10)
    with torch.no_grad():
        a = stored(x, torch.tensor(0.5), context, pooled)  # scalar sigma broadcast over the batch
        b = upcast(x, torch.tensor([0.5, 0.5]), context, pooled)
    assert a.dtype == torch.float32
    assert_rel_close(a, b, 1e-5)


def test_bad_input() -> None:
    ref = diffusers_sd3("sd3.0", seed=1)
    ours = build_mmdit_from_state_dict(ref.state_dict())
    x, sigma, context, pooled = _inputs(seed=11)
    with pytest.raises(ValueError, match="16 latent channels, got 4"):
        ours(x[:, :4], sigma, context, pooled)
    with pytest.raises(ValueError, match="exceeds this MMDiT's position table"):
        ours(torch.zeros(1, 16, 26, 8), sigma[:1], context[:1], pooled[:1])
    with pytest.raises(ValueError, match="not an SD3 MMDiT"):
        build_mmdit_from_state_dict({"input_blocks.0.0.weight": torch.zeros(1)})
    incomplete = convert_diffusers_mmdit_to_original(ref.state_dict())
    del incomplete["context_embedder.weight"]
    with pytest.raises(ValueError, match="'context_embedder.weight' is missing"):
        build_mmdit_from_state_dict(incomplete)
    with pytest.raises(ValueError, match="attn2_layers"):
        MMDiTConfig(depth=2, attn2_layers=(3,))


def test_meta_construction_and_training_init() -> None:
    """Built on meta without initialisers; init_weights gives a usable model (finite output)."""
    cfg = MMDiTConfig(hidden_size=64, num_heads=2, depth=2, context_in_dim=8, pooled_dim=4, pos_embed_max_size=8,
                      attn2_layers=(0,))  # fmt: skip
    with torch.device("meta"):
        meta = MMDiT(cfg)
    assert all(p.is_meta for p in meta.parameters())
    model = MMDiT(cfg).init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(torch.randn(1, 16, 8, 8), torch.tensor([0.5]), torch.randn(1, 3, 8), torch.randn(1, 4))
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all()
