"""SD3 (MMDiT) and Z-Image LoRA key mapping and merging, checked against hand merges.

For each family, every namings a LoRA may use:

* the checkpoint's own module paths (Stability's ``joint_blocks.0.x_block.attn.qkv`` / ComfyUI's
  ``layers.0.attention.qkv``) under ``diffusion_model.`` and as kohya ``lora_unet_`` names: every
  patchable layer merged must equal ``W + up @ down * alpha/rank * strength``;
* diffusers / peft paths (``transformer.transformer_blocks.0.attn.to_q.lora_A``, and for Z-Image also
  under ``diffusion_model.`` as ai-toolkit writes them, and OneTrainer's ``lora_transformer_``): these
  patch row slices of the fused q/k/v (and SD3's half-swapped final modulations).  The reference
  merges the same factors into the *diffusers* state dict (whole separate weights) and converts the
  result with our layout converter: the merged model must equal it, weight for weight.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from nodes.diffusion.models.lora import apply_lora
from nodes.diffusion.models.lora_keys import PATCHABLE, LoraTarget, sd3_key_map, zimage_key_map
from nodes.diffusion.models.mmdit import build_mmdit_from_state_dict, convert_diffusers_mmdit_to_original
from nodes.diffusion.models.zimage import build_zimage_from_state_dict, convert_diffusers_zimage_to_comfy
from tests.diffusion.flux_fixtures import assert_rel_close

pytest.importorskip("diffusers")
RANK = 3
REL = 1e-6  # one fp32 rank-3 product added to each weight


def _factors(g: torch.Generator, out_dim: int, in_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.1 * torch.randn(RANK, in_dim, generator=g), 0.1 * torch.randn(out_dim, RANK, generator=g)


def _sd3() -> tuple[nn.Module, Callable, Callable]:
    from tests.diffusion.sd3_pipeline_fixtures import diffusers_mmdit

    return diffusers_mmdit(seed=5), build_mmdit_from_state_dict, convert_diffusers_mmdit_to_original


def _zimage() -> tuple[nn.Module, Callable, Callable]:
    from tests.diffusion.zimage_pipeline_fixtures import diffusers_zimage

    return diffusers_zimage(seed=5), build_zimage_from_state_dict, convert_diffusers_zimage_to_comfy


FAMILIES = {"sd3": _sd3, "zimage": _zimage}


@pytest.mark.parametrize("family", FAMILIES)
def test_native_and_kohya_names_merge_every_layer(family: str) -> None:
    ref, build, _ = FAMILIES[family]()
    base = build(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    lora, expected = {}, {}
    strength = 0.7
    modules = [(n, m) for n, m in base.named_modules() if isinstance(m, PATCHABLE)]
    assert any(n.endswith("qkv") for n, _ in modules)
    for i, (name, mod) in enumerate(modules):
        shape = mod.weight.shape
        down, up = _factors(g, shape[0], shape[1:].numel())
        if mod.weight.ndim == 4:  # SD3's patch embedding is a conv
            down = down.reshape(RANK, *shape[1:])
            up = up[:, :, None, None]
        key = f"diffusion_model.{name}" if i % 2 else "lora_unet_" + name.replace(".", "_")
        lora[f"{key}.lora_down.weight"], lora[f"{key}.lora_up.weight"] = down, up
        lora[f"{key}.alpha"] = torch.tensor(1.5)
        delta = (up.flatten(1) @ down.flatten(1)).reshape(shape)
        expected[name + ".weight"] = mod.weight + delta * (1.5 / RANK) * strength
    before = {k: v.clone() for k, v in base.state_dict().items()}
    out = apply_lora(base, None, lora, strength, 1.0)
    assert out.unmatched == []
    merged = out.unet.state_dict()
    for key, value in expected.items():
        assert_rel_close(merged[key], value, REL)
    for key, value in base.state_dict().items():  # base untouched
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("spelling", ["transformer.", "diffusion_model.", "lora_transformer_"])
@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_names_patch_fused_slices(family: str, spelling: str) -> None:
    ref, build, convert = FAMILIES[family]()
    dsd = ref.state_dict()
    base = build(dsd)
    g = torch.Generator().manual_seed(1)
    lora, merged_diffusers = {}, dict(dsd)
    strength = 0.9
    for name, mod in ((n, m) for n, m in ref.named_modules() if isinstance(m, nn.Linear)):
        down, up = _factors(g, mod.out_features, mod.in_features)
        key = spelling + (name.replace(".", "_") if spelling.endswith("_") else name)
        suffixes = (".lora_down.weight", ".lora_up.weight") if spelling.endswith("_") else (".lora_A.weight",
                                                                                            ".lora_B.weight")
        lora[key + suffixes[0]], lora[key + suffixes[1]] = down, up
        merged_diffusers[name + ".weight"] = dsd[name + ".weight"] + strength * (up @ down)
    expected = {k: v for k, v in convert(merged_diffusers).items() if k != "norm_final.weight"}
    out = apply_lora(base, None, lora, strength, 1.0)
    assert out.unmatched == []
    merged = out.unet.state_dict()
    assert set(merged) == set(expected)
    for key, value in expected.items():
        assert_rel_close(merged[key], value, REL)
    qkv = "joint_blocks.1.x_block.attn.qkv.weight" if family == "sd3" else "layers.1.attention.qkv.weight"
    delta = merged[qkv] - base.state_dict()[qkv]
    assert all(part.abs().max() > 0 for part in delta.chunk(3))  # q, k and v each got their part


def test_key_map_targets() -> None:
    ref, build, _ = _sd3()
    table = sd3_key_map(build(ref.state_dict()))
    h = 32
    assert table["lora_unet_joint_blocks_0_x_block_attn_qkv"] == "joint_blocks.0.x_block.attn.qkv"
    assert table["transformer.transformer_blocks.0.attn.add_k_proj"] == LoraTarget(
        "joint_blocks.0.context_block.attn.qkv", h, 2 * h)
    assert table["transformer.transformer_blocks.0.attn2.to_v"] == LoraTarget("joint_blocks.0.x_block.attn2.qkv",
                                                                              2 * h, 3 * h)
    assert table["transformer.norm_out.linear"].swap_halves
    assert table["transformer.transformer_blocks.1.norm1_context.linear"].swap_halves  # the last block's
    first_text_mod = table["transformer.transformer_blocks.0.norm1_context.linear"]
    assert first_text_mod == "joint_blocks.0.context_block.adaLN_modulation.1"
    ref, build, _ = _zimage()
    table = zimage_key_map(build(ref.state_dict()))
    assert table["diffusion_model.layers.0.attention.qkv"] == "layers.0.attention.qkv"
    assert table["diffusion_model.layers.0.attention.to_k"] == LoraTarget("layers.0.attention.qkv", 64, 128)
    assert table["transformer.noise_refiner.0.attention.to_out.0"] == "noise_refiner.0.attention.out"
    assert table["lora_unet_all_x_embedder_2-1"] == "x_embedder"
    assert table["transformer.layers.1.feed_forward.w2"] == "layers.1.feed_forward.w2"


def test_a_flux_lora_on_zimage_is_refused() -> None:
    from nodes.diffusion.models.lora import LoraError

    ref, build, _ = _zimage()
    g = torch.Generator().manual_seed(3)
    down, up = _factors(g, 192, 64)
    lora = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": down,
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": up}
    with pytest.raises(LoraError, match="none of its 1 LoRA layers matched"):
        apply_lora(build(ref.state_dict()), None, lora, 1.0, 1.0)
