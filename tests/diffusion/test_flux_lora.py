"""FLUX LoRA key mapping and merging, checked against hand merges.

* BFL / ComfyUI names (``diffusion_model.double_blocks.0.img_attn.qkv.lora_down``) and kohya
  names (``lora_unet_double_blocks_0_img_attn_qkv``): every patchable layer merged must equal
  ``W + up @ down * alpha/rank * strength``.
* diffusers / peft names (``transformer.transformer_blocks.0.attn.to_q.lora_A``): these patch
  row slices of BFL's fused qkv / linear1 weights and a half-swapped final modulation.  The
  reference merges the same factors into the *diffusers* state dict (whole separate weights)
  and converts the result to BFL: our merged model must equal it.
* Text encoders of a FLUX pair (CLIP-L, T5): ``lora_te1_`` / ``lora_te2_``.
"""

from __future__ import annotations

import torch
from torch import nn

from nodes.diffusion.models.clip_text import build_clip_from_state_dict
from nodes.diffusion.models.flux import build_flux_from_state_dict, convert_diffusers_flux_to_bfl
from nodes.diffusion.models.lora import apply_lora
from nodes.diffusion.models.lora_keys import PATCHABLE, LoraTarget, flux_key_map
from nodes.diffusion.models.t5 import T5Config, T5Encoder
from tests.diffusion.flux_fixtures import assert_rel_close, diffusers_flux
from tests.diffusion.text_fixtures import make_hf_clip_sd

RANK = 3
REL = 1e-6  # one fp32 rank-3 product added to each weight


def _factors(g: torch.Generator, out_dim: int, in_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.1 * torch.randn(RANK, in_dim, generator=g), 0.1 * torch.randn(out_dim, RANK, generator=g)


def _reference():
    ref = diffusers_flux(True, seed=11)
    return ref, ref.state_dict()


def test_bfl_and_kohya_names_merge_every_layer() -> None:
    _, dsd = _reference()
    base = build_flux_from_state_dict(dsd)
    g = torch.Generator().manual_seed(0)
    lora, expected = {}, {}
    strength = 0.7
    modules = [(n, m) for n, m in base.named_modules() if isinstance(m, PATCHABLE)]
    for i, (name, mod) in enumerate(modules):
        down, up = _factors(g, mod.out_features, mod.in_features)
        alpha = 1.5
        if i % 2:
            lora[f"diffusion_model.{name}.lora_down.weight"] = down
            lora[f"diffusion_model.{name}.lora_up.weight"] = up
            lora[f"diffusion_model.{name}.alpha"] = torch.tensor(alpha)
        else:
            key = "lora_unet_" + name.replace(".", "_")
            lora[f"{key}.lora_down.weight"] = down
            lora[f"{key}.lora_up.weight"] = up
            lora[f"{key}.alpha"] = torch.tensor(alpha)
        expected[name + ".weight"] = mod.weight + up @ down * (alpha / RANK) * strength
    before = {k: v.clone() for k, v in base.state_dict().items()}
    out = apply_lora(base, None, lora, strength, 1.0)
    assert out.unmatched == []
    merged = out.unet.state_dict()
    for key, value in expected.items():
        assert_rel_close(merged[key], value, REL)
    for key, value in base.state_dict().items():  # base untouched
        assert torch.equal(value, before[key]), key
    untouched = [k for k in merged if k not in expected]
    assert untouched and all(merged[k] is base.state_dict()[k] or torch.equal(merged[k], before[k]) for k in untouched)


def test_diffusers_peft_names_patch_fused_slices() -> None:
    ref, dsd = _reference()
    base = build_flux_from_state_dict(dsd)
    g = torch.Generator().manual_seed(1)
    lora, merged_diffusers = {}, dict(dsd)
    strength = 0.9
    linears = [(n, m) for n, m in ref.named_modules() if isinstance(m, nn.Linear)]
    for name, mod in linears:
        down, up = _factors(g, mod.out_features, mod.in_features)
        lora[f"transformer.{name}.lora_A.weight"] = down
        lora[f"transformer.{name}.lora_B.weight"] = up
        merged_diffusers[name + ".weight"] = dsd[name + ".weight"] + strength * (up @ down)
    expected = convert_diffusers_flux_to_bfl(merged_diffusers)
    out = apply_lora(base, None, lora, strength, 1.0)
    assert out.unmatched == []
    merged = out.unet.state_dict()
    assert set(merged) == set(expected)
    for key, value in expected.items():
        assert_rel_close(merged[key], value, REL)
    # Spot-check the slice bookkeeping directly: the fused img qkv of block 1 got all three parts.
    qkv = merged["double_blocks.1.img_attn.qkv.weight"] - base.state_dict()["double_blocks.1.img_attn.qkv.weight"]
    assert all(part.abs().max() > 0 for part in qkv.chunk(3))


def test_key_map_targets() -> None:
    _, dsd = _reference()
    table = flux_key_map(build_flux_from_state_dict(dsd))
    h = 64
    assert table["lora_unet_double_blocks_0_img_attn_qkv"] == "double_blocks.0.img_attn.qkv"
    assert table["transformer.transformer_blocks.0.attn.to_k"] == LoraTarget("double_blocks.0.img_attn.qkv", h, 2 * h)
    assert table["lora_transformer_single_transformer_blocks_1_proj_mlp"] == LoraTarget(
        "single_blocks.1.linear1", 3 * h, 3 * h + 4 * h
    )
    assert table["transformer.norm_out.linear"].swap_halves


def test_text_encoder_pair_names() -> None:
    """FLUX's text encoders: CLIP-L answers to ``lora_te1_``, T5 to ``lora_te2_`` (kohya) / ``text_encoder_2.``."""
    clip = build_clip_from_state_dict(make_hf_clip_sd("", width=64, seed=0), "quick_gelu").requires_grad_(False)
    t5 = T5Encoder(T5Config(vocab_size=50, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2))
    t5.init_weights(torch.Generator().manual_seed(0)).requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    q = t5.encoder.block[1].layer[0].SelfAttention.q
    down_t, up_t = _factors(g, q.out_features, q.in_features)
    clip_name = next(n for n, m in clip.named_modules() if isinstance(m, nn.Linear))
    clip_mod = clip.get_submodule(clip_name)
    down_c, up_c = _factors(g, clip_mod.out_features, clip_mod.in_features)
    lora = {
        "lora_te2_encoder_block_1_layer_0_SelfAttention_q.lora_down.weight": down_t,
        "lora_te2_encoder_block_1_layer_0_SelfAttention_q.lora_up.weight": up_t,
        f"text_encoder.{clip_name}.lora_A.weight": down_c,
        f"text_encoder.{clip_name}.lora_B.weight": up_c,
    }
    out = apply_lora(None, (clip, t5), lora, 1.0, 0.5)
    new_clip, new_t5 = out.clip
    assert out.unmatched == []
    assert_rel_close(new_t5.encoder.block[1].layer[0].SelfAttention.q.weight, q.weight + 0.5 * up_t @ down_t, REL)
    assert_rel_close(new_clip.get_submodule(clip_name).weight, clip_mod.weight + 0.5 * up_c @ down_c, REL)
