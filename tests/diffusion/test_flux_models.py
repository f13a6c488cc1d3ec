"""FLUX.1 transformer: parity with diffusers' FluxTransformer2DModel in both key layouts, dev and schnell.

The reference is a random tiny diffusers model.  Our model is loaded (a) from BFL keys made
by our converter and (b) straight from the diffusers keys; the BFL naming itself is checked
against diffusers' own BFL->diffusers converter, so "BFL layout" means the real one.
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.flux import (
    FluxConfig,
    FluxTransformer,
    axes_dim_for_head_dim,
    build_flux_from_state_dict,
    convert_diffusers_flux_to_bfl,
    detect_flux_layout,
    flux_config_from_state_dict,
)
from tests.diffusion.flux_fixtures import (
    TINY_FLUX,
    assert_rel_close,
    diffusers_flux,
    diffusers_flux_velocity,
)

REL = 1e-4  # fp32, a few dozen accumulated matmuls; observed differences are ~1e-6 relative


def _inputs(seed: int, h: int = 8, w: int = 6, batch: int = 2, txt: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, h, w, generator=g)
    sigma = torch.tensor([0.8, 0.3])[:batch]
    context = torch.randn(batch, txt, TINY_FLUX["joint_attention_dim"], generator=g)
    pooled = torch.randn(batch, TINY_FLUX["pooled_projection_dim"], generator=g)
    return x, sigma, context, pooled


@pytest.fixture(scope="module", params=[True, False], ids=["dev", "schnell"])
def reference(request):
    guidance = request.param
    return guidance, diffusers_flux(guidance, seed=3 if guidance else 4)


def test_config_inferred_from_shapes(reference) -> None:
    guidance, ref = reference
    sd = convert_diffusers_flux_to_bfl(ref.state_dict())
    assert flux_config_from_state_dict(sd) == FluxConfig(
        in_channels=64, hidden_size=64, num_heads=2, depth=2, depth_single_blocks=2, context_in_dim=24,
        vec_in_dim=12, mlp_ratio=4.0, axes_dim=(4, 14, 14), qkv_bias=True, guidance_embed=guidance,
        out_channels=64,
    )  # fmt: skip


def test_layout_detection(reference) -> None:
    _, ref = reference
    sd = ref.state_dict()
    assert detect_flux_layout(sd) == "diffusers"
    assert detect_flux_layout(convert_diffusers_flux_to_bfl(sd)) == "bfl"
    assert detect_flux_layout(["model.diffusion_model.input_blocks.0.0.weight"]) is None


@pytest.mark.parametrize("source", ["bfl", "diffusers"])
def test_velocity_matches_diffusers(reference, source: str) -> None:
    guidance, ref = reference
    sd = ref.state_dict()
    ours = build_flux_from_state_dict(convert_diffusers_flux_to_bfl(sd) if source == "bfl" else sd)
    x, sigma, context, pooled = _inputs(seed=7)
    g = torch.tensor([3.5, 1.0]) if guidance else None
    expected = diffusers_flux_velocity(ref, x, sigma, context, pooled, g)
    with torch.no_grad():
        actual = ours(x, sigma, context, pooled, g)
    assert actual.shape == x.shape
    assert_rel_close(actual, expected, REL)


def test_guidance_changes_dev_output(reference) -> None:
    """A dev model must actually use the guidance value (else the embedding is mis-wired)."""
    guidance, ref = reference
    if not guidance:
        pytest.skip("schnell has no guidance embedding")
    ours = build_flux_from_state_dict(convert_diffusers_flux_to_bfl(ref.state_dict()))
    x, sigma, context, pooled = _inputs(seed=8)
    with torch.no_grad():
        a = ours(x, sigma, context, pooled, torch.tensor([1.0, 1.0]))
        b = ours(x, sigma, context, pooled, torch.tensor([4.0, 4.0]))
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_bfl_names_match_diffusers_converter(reference) -> None:
    """diffusers' BFL->diffusers converter turns our BFL dict back into the reference weights.

    That converter hard-codes FLUX.1's width (3072) when splitting the single blocks' fused
    ``linear1``, so those two tensors are swapped for correctly shaped placeholders and
    checked separately against q/k/v/proj_mlp.
    """
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    _, ref = reference
    ref_sd = ref.state_dict()
    bfl = convert_diffusers_flux_to_bfl(ref_sd)
    hidden = 64
    for i in range(2):
        w, b = bfl[f"single_blocks.{i}.linear1.weight"], bfl[f"single_blocks.{i}.linear1.bias"]
        q, k, v, mlp = w.split([hidden, hidden, hidden, 4 * hidden])
        s = f"single_transformer_blocks.{i}."
        for part, name in zip((q, k, v, mlp), ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), strict=True):
            assert torch.equal(part, ref_sd[s + name + ".weight"])
        assert torch.equal(b[3 * hidden :], ref_sd[s + "proj_mlp.bias"])
    placeholder = {k: v for k, v in bfl.items()}
    for i in range(2):
        placeholder[f"single_blocks.{i}.linear1.weight"] = torch.zeros(3 * 3072 + 4 * 3072, 1)
        placeholder[f"single_blocks.{i}.linear1.bias"] = torch.zeros(3 * 3072 + 4 * 3072)
    back = convert_flux_transformer_checkpoint_to_diffusers(placeholder)
    single_split = {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"}
    compared = 0
    for key, value in back.items():
        parts = key.split(".")
        if parts[0] == "single_transformer_blocks" and ".".join(parts[2:-1]) in single_split:
            continue
        assert torch.equal(value, ref_sd[key]), key
        compared += 1
    assert compared == len(ref_sd) - 2 * 8


def test_odd_latent_sides_are_padded_and_cropped(reference) -> None:
    """Odd sides: same as running on the circularly padded latent and cropping (ComfyUI's rule)."""
    guidance, ref = reference
    ours = build_flux_from_state_dict(ref.state_dict())
    x, sigma, context, pooled = _inputs(seed=9, h=7, w=5)
    g = torch.tensor([2.0, 2.0]) if guidance else None
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="circular")
    with torch.no_grad():
        out = ours(x, sigma, context, pooled, g)
        full = ours(padded, sigma, context, pooled, g)
    assert out.shape == x.shape
    assert_rel_close(out, full[:, :, :7, :5], 1e-5)


def test_fp16_storage_computes_in_input_dtype(reference) -> None:
    """Weights stored in half precision stay so; the layers upcast per call to the latent's dtype."""
    guidance, ref = reference
    bfl = {k: v.half() for k, v in convert_diffusers_flux_to_bfl(ref.state_dict()).items()}
    stored = build_flux_from_state_dict(bfl)
    assert all(p.dtype == torch.float16 for p in stored.parameters())
    upcast = build_flux_from_state_dict({k: v.float() for k, v in bfl.items()})
    x, sigma, context, pooled = _inputs(seed=10)
    g = torch.tensor([3.0, 3.0]) if guidance else None
    with torch.no_grad():
        a = stored(x, sigma, context, pooled, g)
        b = upcast(x, sigma, context, pooled, g)
    assert a.dtype == torch.float32
    assert_rel_close(a, b, 1e-5)


def test_axes_rule_and_bad_input() -> None:
    assert axes_dim_for_head_dim(128) == (16, 56, 56)
    assert sum(axes_dim_for_head_dim(48)) == 48
    with pytest.raises(ValueError, match="even"):
        axes_dim_for_head_dim(15)
    with pytest.raises(ValueError, match="axes_dim"):
        FluxConfig(hidden_size=64, num_heads=2, axes_dim=(16, 56, 56))
    with torch.device("meta"):
        model = FluxTransformer(FluxConfig(hidden_size=64, num_heads=2, depth=0, depth_single_blocks=0,
                                           axes_dim=(4, 14, 14)))  # fmt: skip
    with pytest.raises(ValueError, match="16 latent channels, got 4"):
        model(torch.zeros(1, 4, 8, 8, device="meta"), torch.zeros(1), torch.zeros(1, 1, 4096), torch.zeros(1, 768))
    with pytest.raises(ValueError, match="not a FLUX"):
        build_flux_from_state_dict({"input_blocks.0.0.weight": torch.zeros(1)})
