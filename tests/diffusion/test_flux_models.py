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


def test_guidance_used_by_dev_only(reference) -> None:
    """dev must respond to the guidance value (else its embedding is mis-wired); schnell ignores it."""
    guidance, ref = reference
    ours = build_flux_from_state_dict(convert_diffusers_flux_to_bfl(ref.state_dict()))
    x, sigma, context, pooled = _inputs(seed=8)
    with torch.no_grad():
        a = ours(x, sigma, context, pooled, torch.tensor([1.0, 1.0]))
        b = ours(x, sigma, context, pooled, torch.tensor([4.0, 4.0]))
    if guidance:
        assert (a - b).abs().max() > 1e-3 * a.abs().max()
    else:
        assert torch.equal(a, b)


def test_control_variant_with_concatenated_channels() -> None:
    """Canny/depth layout (in_channels 128 = (16 latent + 16 control) x 4, out 64) matches diffusers' Flux Control."""
    ref = diffusers_flux(True, seed=6, in_channels=128, out_channels=64)
    ours = build_flux_from_state_dict(convert_diffusers_flux_to_bfl(ref.state_dict()))
    assert ours.config.in_channels == 128 and ours.config.latent_channels == 16
    x, sigma, context, pooled = _inputs(seed=13)
    control = torch.randn(x.shape, generator=torch.Generator().manual_seed(14))
    joint = torch.cat([x, control], dim=1)  # FluxControlPipeline concatenates the packed tokens: same order
    g = torch.tensor([10.0, 30.0])
    expected = diffusers_flux_velocity(ref, joint, sigma, context, pooled, g)
    with torch.no_grad():
        actual = ours(joint, sigma, context, pooled, g)
    assert actual.shape == x.shape
    assert_rel_close(actual, expected, REL)


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


def test_fp8_storage_stays_fp8(reference) -> None:
    """float8 weights are kept as float8 (resident bytes = file bytes) and upcast per layer at compute."""
    guidance, ref = reference
    bfl = {k: v.to(torch.float8_e4m3fn) for k, v in convert_diffusers_flux_to_bfl(ref.state_dict()).items()}
    stored = build_flux_from_state_dict(bfl)
    assert sum(p.numel() * p.element_size() for p in stored.parameters()) == sum(t.numel() for t in bfl.values())
    upcast = build_flux_from_state_dict({k: v.float() for k, v in bfl.items()})
    x, sigma, context, pooled = _inputs(seed=12)
    g = torch.tensor(2.5) if guidance else None  # a scalar guidance/timestep is broadcast over the batch
    with torch.no_grad():
        a = stored(x, torch.tensor(0.5), context, pooled, g)
        b = upcast(x, torch.tensor([0.5, 0.5]), context, pooled, g)
    assert_rel_close(a, b, 1e-5)


def test_incomplete_state_dict_is_a_clear_error(reference) -> None:
    _, ref = reference
    bfl = convert_diffusers_flux_to_bfl(ref.state_dict())
    del bfl["txt_in.weight"]
    with pytest.raises(ValueError, match="'txt_in.weight' is missing"):
        flux_config_from_state_dict(bfl)


def test_meta_construction_runs_no_initialisers() -> None:
    """Building FLUX and T5 on the meta device must not run torch.nn.init (which imports torch._dynamo: seconds)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from nodes.diffusion.models.flux import FluxConfig, FluxTransformer\n"
        "from nodes.diffusion.models.t5 import T5Config, T5Encoder\n"
        "with torch.device('meta'):\n"
        "    FluxTransformer(FluxConfig(depth=2, depth_single_blocks=2))\n"
        "    T5Encoder(T5Config(num_layers=2))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_loads_from_a_memory_mapped_file_through_assign_weights(reference, tmp_path) -> None:
    """The project's loading path (lazy safetensors -> meta build -> assign_weights) keeps fp16 as stored."""
    from safetensors.torch import save_file

    from nodes.diffusion.models.loading import assign_weights, build_on_meta, load_state_dict

    guidance, ref = reference
    bfl = {k: v.half().contiguous() for k, v in convert_diffusers_flux_to_bfl(ref.state_dict()).items()}
    path = tmp_path / "flux_tiny.safetensors"
    save_file(bfl, str(path))
    sd, _ = load_state_dict(path)
    assert detect_flux_layout(sd.keys()) == "bfl"
    model = assign_weights(build_on_meta(FluxTransformer, flux_config_from_state_dict(sd)), sd, name=str(path))
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    x, sigma, context, pooled = _inputs(seed=15)
    g = torch.tensor([3.0, 3.0]) if guidance else None
    with torch.no_grad():
        expected = build_flux_from_state_dict({k: v.float() for k, v in bfl.items()})(x, sigma, context, pooled, g)
        assert_rel_close(model(x, sigma, context, pooled, g), expected, 1e-5)


def test_diffusers_file_missing_a_fused_piece_names_it(reference) -> None:
    """A diffusers file without one of the pieces a fused BFL tensor is made of fails naming both."""
    _, ref = reference
    sd = dict(ref.state_dict())
    del sd["transformer_blocks.0.attn.to_k.weight"]
    missing = r"FLUX state dict lacks \['attn.to_k'\] for 'double_blocks.0.img_attn.qkv.weight'"
    with pytest.raises(KeyError, match=missing):
        convert_diffusers_flux_to_bfl(sd)
