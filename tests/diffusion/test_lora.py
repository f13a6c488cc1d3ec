"""LoRA parsing, name mapping and merging onto tiny SD1/SD2/SDXL-like UNets and CLIP encoders.

What is checked, on random LoRAs written to real ``.safetensors`` files:

* the diffusers <-> LDM module map derived from ``UNetConfig`` agrees with
  diffusers' own ``convert_ldm_unet_checkpoint`` on every tensor (identity);
* merged Linear weights equal the hand merge ``W + up @ down * alpha/rank * s``
  (fp32 rounding of a rank-length sum); merged conv weights reproduce the LoRA *forward*
  ``conv(x) + s * alpha/rank * up(down(x))`` (fp32 rounding of the conv's reduction, see
  ``tests/tolerance.py``), which checks the kernel reshape independently of the flatten formula;
* the base model is never mutated (same tensors, same storage, same values)
  and untouched parameters are shared with the patched copy, not copied.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from nodes.diffusion.models.clip_text import build_clip_from_state_dict
from nodes.diffusion.models.lora import (
    LoraError,
    apply_lora,
    load_lora,
    merge_lora,
    parse_lora,
)
from nodes.diffusion.models.lora_keys import ldm_to_diffusers_unet, unet_key_map
from nodes.diffusion.models.unet import UNetModel
from tests.diffusion.ldm_fixtures import (
    UNET_PREFIX,
    diffusers_unet_config,
    make_unet,
    randomize_,
    tiny_unet_config,
)
from tests.diffusion.text_fixtures import make_hf_clip_sd
from tests.tolerance import assert_close

torch.set_num_threads(1)

RANK = 4


# ----------------------------------------------------------------------------- helpers


def _unet(kind: str, seed: int = 0) -> UNetModel:
    return randomize_(UNetModel(tiny_unet_config(kind)), seed).eval().requires_grad_(False)


def _clip(width: int = 64, seed: int = 0, projection: int | None = None, activation: str = "quick_gelu"):
    sd = make_hf_clip_sd("", width=width, seed=seed, projection=projection)
    return build_clip_from_state_dict(sd, activation).requires_grad_(False)


def _factors(gen: torch.Generator, weight: torch.Tensor, flat: bool = False):
    """Random (down, up) for ``weight``: 2-D for Linear, (r,in,kh,kw)/(out,r,1,1) for conv."""
    if weight.ndim == 2 or flat:
        down = torch.randn(RANK, weight.shape[1], generator=gen)
        up = torch.randn(weight.shape[0], RANK, generator=gen)
    else:
        down = torch.randn(RANK, *weight.shape[1:], generator=gen)
        up = torch.randn(weight.shape[0], RANK, 1, 1, generator=gen)
    return down * 0.3, up * 0.3


class Spec:
    """LoRA layers to write: name -> (target module path, model, down, up, alpha)."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.entries: dict[str, tuple[str, nn.Module, torch.Tensor, torch.Tensor, float | None]] = {}

    def add(self, lora_name: str, model: nn.Module, target: str, *, alpha: float | None = 2.0, flat=False):
        down, up = _factors(self.gen, model.get_submodule(target).weight, flat)
        self.entries[lora_name] = (target, model, down, up, alpha)

    def state_dict(self, style: str = "kohya") -> dict[str, torch.Tensor]:
        sd = {}
        for name, (_, _, down, up, alpha) in self.entries.items():
            if style == "kohya":
                sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"] = down, up
            else:  # peft / diffusers
                sd[f"{name}.lora_A.weight"], sd[f"{name}.lora_B.weight"] = down, up
            if alpha is not None:
                sd[f"{name}.alpha"] = torch.tensor(alpha)
        return sd


def _write(tmp_path, sd: dict[str, torch.Tensor], name: str = "lora.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _snapshot(model: nn.Module) -> dict[str, tuple[nn.Parameter, int, torch.Tensor]]:
    return {n: (p, p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}


def _assert_unchanged(model: nn.Module, snap) -> None:
    params = dict(model.named_parameters())
    assert params.keys() == snap.keys()
    for n, (obj, ptr, value) in snap.items():
        assert params[n] is obj and obj.data_ptr() == ptr, f"base parameter {n} was replaced"
        assert torch.equal(obj, value), f"base parameter {n} was modified"


def _check_merge(base: nn.Module, patched: nn.Module, spec: Spec, strength: float) -> None:
    """Every targeted weight of ``base`` is merged correctly in ``patched``; every other is shared."""
    targets = {t + ".weight": (d, u, a) for t, m, d, u, a in spec.entries.values() if m is base}
    assert targets, "spec has no layer for this model"
    new = dict(patched.named_parameters())
    for name, p in base.named_parameters():
        if name not in targets:
            assert new[name] is p, f"{name} should be shared with the base"
            continue
        down, up, alpha = targets[name]
        scale = strength * (alpha / RANK if alpha is not None else 1.0)
        got = new[name]
        assert got is not p and got.dtype == p.dtype and got.shape == p.shape
        module_name = name.rsplit(".", 1)[0]
        module = base.get_submodule(module_name)
        if isinstance(module, nn.Linear):
            want = p + (up.flatten(1) @ down.flatten(1)).reshape(p.shape) * scale
            assert_close(got, want, reduction=RANK)
        else:
            assert isinstance(module, nn.Conv2d)
            x = torch.randn(2, p.shape[1], 9, 9, generator=torch.Generator().manual_seed(1))
            kw = {"stride": module.stride, "padding": module.padding}
            d4 = down if down.ndim == 4 else down[:, :, None, None]
            u4 = up if up.ndim == 4 else up[:, :, None, None]
            lora_out = F.conv2d(F.conv2d(x, d4, **kw), u4)
            want = F.conv2d(x, p, module.bias, **kw) + scale * lora_out
            k = p.shape[1] * p.shape[2] * p.shape[3]  # the conv's reduction length; the LoRA path chains two
            assert_close(F.conv2d(x, got, module.bias, **kw), want, reduction=k, depth=2)


def _unet_inputs(kind: str):
    cfg = tiny_unet_config(kind)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 5, cfg.context_dim, generator=g)
    y = torch.randn(1, cfg.adm_in_channels, generator=g) if cfg.adm_in_channels else None
    return x, torch.tensor([500.0]), ctx, y


# ----------------------------------------------------------------------------- name map


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_diffusers_map_matches_diffusers_converter(kind: str) -> None:
    """Our LDM->diffusers map, built from the config, equals diffusers' converter on every tensor."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    cfg, sd = make_unet(kind)
    converted = convert_ldm_unet_checkpoint({UNET_PREFIX + k: v for k, v in sd.items()}, diffusers_unet_config(cfg))
    ours = ldm_to_diffusers_unet(cfg, sd.keys())
    assert set(ours) == set(sd), "every UNet tensor must have a diffusers name"
    assert set(ours.values()) == set(converted)
    for ldm, diff in ours.items():
        assert converted[diff] is sd[ldm], f"{ldm} -> {diff} is not what diffusers maps there"


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_every_alias_resolves_to_its_module(kind: str) -> None:
    """No two modules share a kohya ("_"-joined) alias, in either naming."""
    model = _unet(kind)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    table = unet_key_map(model, model.config)
    diff = ldm_to_diffusers_unet(model.config, names)
    assert set(diff) == set(names)
    for n in names:
        assert table["lora_unet_" + n.replace(".", "_")] == n
        assert table["lora_unet_" + diff[n].replace(".", "_")] == n
        assert table["unet." + diff[n]] == n


# ----------------------------------------------------------------------------- SD1

# (diffusers module path, LDM path) in the tiny SD1 layout, written out by hand:
# input_blocks 1 = L0 res+attn, 2 = down, 3 = L1 res+attn, 4 = down, 5 = L2 res;
# output_blocks 0,1 = L2 (upsample at 1.1), 2,3 = L1 with attn (upsample at 3.2), 4,5 = L0.
_TB0 = "transformer_blocks.0"
SD1_TARGETS = [
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.1.1.transformer_blocks.0.attn1.to_q"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "input_blocks.1.1.transformer_blocks.0.attn2.to_k"),
    ("down_blocks.0.attentions.0.proj_in", "input_blocks.1.1.proj_in"),
    ("down_blocks.1.resnets.0.conv1", "input_blocks.3.0.in_layers.2"),
    ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.3.0.skip_connection"),
    ("down_blocks.0.downsamplers.0.conv", "input_blocks.2.0.op"),
    ("mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
    (f"mid_block.attentions.0.{_TB0}.attn1.to_out.0", f"middle_block.1.{_TB0}.attn1.to_out.0"),
    (f"up_blocks.1.attentions.0.{_TB0}.ff.net.0.proj", f"output_blocks.2.1.{_TB0}.ff.net.0.proj"),
    ("up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2", "output_blocks.3.1.transformer_blocks.0.ff.net.2"),
    ("up_blocks.1.attentions.1.proj_out", "output_blocks.3.1.proj_out"),
    ("up_blocks.1.upsamplers.0.conv", "output_blocks.3.2.conv"),
    ("up_blocks.0.resnets.1.conv2", "output_blocks.1.0.out_layers.3"),
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.1.1.conv"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("conv_in", "input_blocks.0.0"),
]
TE_TARGETS = [
    "text_model.encoder.layers.0.self_attn.q_proj",
    "text_model.encoder.layers.0.self_attn.k_proj",
    "text_model.encoder.layers.0.self_attn.v_proj",
    "text_model.encoder.layers.1.self_attn.out_proj",
    "text_model.encoder.layers.1.mlp.fc1",
]


def _kohya(path: str) -> str:
    return path.replace(".", "_")


def test_sd1_kohya_merge_equals_hand_merge(tmp_path) -> None:
    unet, clip = _unet("sd1"), _clip()
    spec = Spec()
    for i, (diff, ldm) in enumerate(SD1_TARGETS):
        spec.add("lora_unet_" + _kohya(diff), unet, ldm, alpha=[1.0, 2.0, None, 4.0][i % 4])
    for t in TE_TARGETS:
        spec.add("lora_te_" + _kohya(t), clip, t, alpha=3.0)
    path = _write(tmp_path, spec.state_dict())
    unet_snap, clip_snap = _snapshot(unet), _snapshot(clip)

    out = apply_lora(unet, clip, load_lora(path), 0.7, 1.3, name=str(path))

    assert out.unmatched == []
    _check_merge(unet, out.unet, spec, 0.7)
    _check_merge(clip, out.clip, spec, 1.3)
    _assert_unchanged(unet, unet_snap)
    _assert_unchanged(clip, clip_snap)

    x, t, ctx, _ = _unet_inputs("sd1")
    ids = torch.tensor([[49406, 320, 1125, 49407, 49407]])
    with torch.no_grad():
        assert (out.unet(x, t, ctx) - unet(x, t, ctx)).abs().max() > 1e-3
        assert (out.clip(ids).last_hidden_state - clip(ids).last_hidden_state).abs().max() > 1e-3
    _assert_unchanged(unet, unet_snap)


def test_strength_zero_is_identity(tmp_path) -> None:
    unet, clip = _unet("sd1"), _clip()
    spec = Spec()
    for diff, ldm in SD1_TARGETS[:4]:
        spec.add("lora_unet_" + _kohya(diff), unet, ldm)
    spec.add("lora_te_" + _kohya(TE_TARGETS[0]), clip, TE_TARGETS[0])
    x, t, ctx, _ = _unet_inputs("sd1")
    with torch.no_grad():
        ref = unet(x, t, ctx)
        out = apply_lora(unet, clip, spec.state_dict(), 0.0, 0.0)
        assert out.unmatched == []
        assert torch.equal(out.unet(x, t, ctx), ref)
    for a, b in zip(out.unet.parameters(), unet.parameters(), strict=True):
        assert a is b
    for a, b in zip(out.clip.parameters(), clip.parameters(), strict=True):
        assert a is b
    # Model strength 0 with clip strength 1 still patches the text encoder only.
    out = apply_lora(unet, clip, spec.state_dict(), 0.0, 1.0)
    assert out.unet is unet and out.clip is not clip


def test_ldm_and_peft_namings(tmp_path) -> None:
    """kohya on LDM paths, peft/diffusers dotted paths (lora_A/B, no alpha) and text_encoder.* mix."""
    unet, clip = _unet("sd1"), _clip()
    kohya_ldm, peft = Spec(0), Spec(1)
    for _, ldm in SD1_TARGETS[:8]:
        kohya_ldm.add("lora_unet_" + _kohya(ldm), unet, ldm)
    for diff, ldm in SD1_TARGETS[8:]:
        peft.add("unet." + diff, unet, ldm, alpha=None)
    for t in TE_TARGETS[:3]:
        peft.add("text_encoder." + t, clip, t, alpha=None)
    sd = {**kohya_ldm.state_dict("kohya"), **peft.state_dict("peft")}
    out = apply_lora(unet, clip, load_lora(_write(tmp_path, sd)), 0.8, 1.0)
    assert out.unmatched == []
    merged = Spec()
    merged.entries = {**kohya_ldm.entries, **peft.entries}
    _check_merge(unet, out.unet, merged, 0.8)
    _check_merge(clip, out.clip, merged, 1.0)


def test_diffusers_attention_processor_naming() -> None:
    unet = _unet("sd1")
    gen = torch.Generator().manual_seed(0)
    w = unet.get_submodule("input_blocks.1.1.transformer_blocks.0.attn1.to_out.0").weight
    down, up = torch.randn(RANK, w.shape[1], generator=gen), torch.randn(w.shape[0], RANK, generator=gen)
    base = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora"
    out = apply_lora(unet, None, {f"{base}.down.weight": down, f"{base}.up.weight": up}, 0.5, 1.0)
    got = out.unet.get_submodule("input_blocks.1.1.transformer_blocks.0.attn1.to_out.0").weight
    assert_close(got, w + 0.5 * up @ down, reduction=RANK)


def test_conv_lora_tucker_mid_matches_composed_convs() -> None:
    """LyCORIS Tucker conv LoRA: 1x1 down, kxk core, 1x1 up == one merged kxk conv."""
    unet = _unet("sd1")
    target = "input_blocks.3.0.in_layers.2"
    conv = unet.get_submodule(target)
    gen = torch.Generator().manual_seed(5)
    down = 0.3 * torch.randn(RANK, conv.in_channels, 1, 1, generator=gen)
    mid = 0.3 * torch.randn(RANK, RANK, 3, 3, generator=gen)
    up = 0.3 * torch.randn(conv.out_channels, RANK, 1, 1, generator=gen)
    name = "lora_unet_down_blocks_1_resnets_0_conv1"
    sd = {f"{name}.lora_down.weight": down, f"{name}.lora_mid.weight": mid, f"{name}.lora_up.weight": up}
    sd[f"{name}.alpha"] = torch.tensor(2.0)
    out = apply_lora(unet, None, sd, 0.9, 1.0)
    x = torch.randn(1, conv.in_channels, 7, 7, generator=gen)
    lora_path = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    want = conv(x) + 0.9 * (2.0 / RANK) * lora_path
    got = out.unet.get_submodule(target)(x)
    assert_close(got, want, reduction=conv.in_channels * 9, depth=3)  # down, 3x3 core, up


# ----------------------------------------------------------------------------- SD2 / SDXL


def test_sd2_linear_projection() -> None:
    """SD2 uses Linear proj_in/out; a 2-D and a 1x1-conv-shaped LoRA both merge onto them."""
    unet = _unet("sd2")
    spec = Spec()
    spec.add("lora_unet_down_blocks_0_attentions_0_proj_in", unet, "input_blocks.1.1.proj_in")
    spec.add(
        "lora_unet_up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_v",
        unet,
        "output_blocks.1.1.transformer_blocks.0.attn2.to_v",
    )
    spec.add("lora_unet_up_blocks_0_upsamplers_0_conv", unet, "output_blocks.1.2.conv")
    sd = spec.state_dict()
    # proj_out stored as a 4-D 1x1 conv LoRA (as kohya writes it for SD1 models).
    w = unet.get_submodule("middle_block.1.proj_out").weight
    gen = torch.Generator().manual_seed(9)
    down4, up4 = torch.randn(RANK, w.shape[1], 1, 1, generator=gen), torch.randn(w.shape[0], RANK, 1, 1, generator=gen)
    sd["lora_unet_mid_block_attentions_0_proj_out.lora_down.weight"] = down4
    sd["lora_unet_mid_block_attentions_0_proj_out.lora_up.weight"] = up4
    snap = _snapshot(unet)
    out = apply_lora(unet, None, sd, 1.0, 1.0)
    assert out.unmatched == []
    got = out.unet.get_submodule("middle_block.1.proj_out").weight
    assert_close(got, w + up4.flatten(1) @ down4.flatten(1), reduction=RANK)
    spec.entries["lora_unet_mid_block_attentions_0_proj_out"] = (
        "middle_block.1.proj_out",
        unet,
        down4.flatten(1),
        up4.flatten(1),
        None,
    )
    _check_merge(unet, out.unet, spec, 1.0)
    _assert_unchanged(unet, snap)


def test_sdxl_two_text_encoders_and_deep_transformers(tmp_path) -> None:
    # tiny SDXL: input 1 = L0 res, 2 = down, 3 = L1 res+attn(depth 2), 4 = down, 5 = L2 res+attn(depth 3);
    # output 0,1 = L2 depth 3 (upsample 1.2), 2,3 = L1 depth 2 (upsample 3.2), 4,5 = L0.
    unet = _unet("sdxl")
    te1 = _clip(width=64, seed=0)
    te2 = _clip(width=96, seed=1, projection=48, activation="gelu")
    spec = Spec()
    spec.add(
        "lora_unet_input_blocks_5_1_transformer_blocks_2_attn2_to_k",
        unet,
        "input_blocks.5.1.transformer_blocks.2.attn2.to_k",
    )
    spec.add(
        "lora_unet_output_blocks_2_1_transformer_blocks_1_ff_net_2",
        unet,
        "output_blocks.2.1.transformer_blocks.1.ff.net.2",
    )
    spec.add("lora_unet_input_blocks_3_0_in_layers_2", unet, "input_blocks.3.0.in_layers.2")
    spec.add("lora_unet_label_emb_0_0", unet, "label_emb.0.0")
    spec.add(
        "lora_unet_up_blocks_0_attentions_1_transformer_blocks_2_attn1_to_v",
        unet,
        "output_blocks.1.1.transformer_blocks.2.attn1.to_v",
    )
    spec.add("lora_unet_add_embedding_linear_2", unet, "label_emb.0.2")
    spec.add("lora_unet_up_blocks_1_upsamplers_0_conv", unet, "output_blocks.3.2.conv")
    spec.add(
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", te1, "text_model.encoder.layers.0.self_attn.q_proj"
    )
    spec.add(
        "lora_te2_text_model_encoder_layers_1_self_attn_v_proj", te2, "text_model.encoder.layers.1.self_attn.v_proj"
    )
    spec.add("lora_te2_text_model_encoder_layers_0_mlp_fc2", te2, "text_model.encoder.layers.0.mlp.fc2")
    spec.add("lora_te2_text_projection", te2, "text_projection")
    snaps = [_snapshot(m) for m in (unet, te1, te2)]
    out = apply_lora(unet, [te1, te2], load_lora(_write(tmp_path, spec.state_dict())), 1.1, 0.6)
    assert out.unmatched == []
    assert isinstance(out.clip, tuple) and len(out.clip) == 2
    _check_merge(unet, out.unet, spec, 1.1)
    _check_merge(te1, out.clip[0], spec, 0.6)
    _check_merge(te2, out.clip[1], spec, 0.6)
    for m, s in zip((unet, te1, te2), snaps, strict=True):
        _assert_unchanged(m, s)
    x, t, ctx, y = _unet_inputs("sdxl")
    with torch.no_grad():
        assert (out.unet(x, t, ctx, y) - unet(x, t, ctx, y)).abs().max() > 1e-3


# ----------------------------------------------------------------------------- reporting, dtype, stacking


def test_unmatched_keys_are_reported(tmp_path) -> None:
    unet, clip = _unet("sd1"), _clip()
    spec = Spec()
    spec.add("lora_unet_" + _kohya(SD1_TARGETS[0][0]), unet, SD1_TARGETS[0][1])
    sd = spec.state_dict()
    z = torch.zeros(RANK, 8)
    bogus = {
        "lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight": z,  # no such block
        "lora_unet_down_blocks_9_resnets_0_conv1.lora_up.weight": z.T,
        "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": z,  # LoHa: not implemented
        "lora_unet_down_blocks_0_resnets_0_conv2.lora_down.weight": z,  # up factor missing
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": z,  # DoRA: not merged at all
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": z.T,
        "lora_unet_down_blocks_0_resnets_0_conv1.dora_scale": z[:1],
        "lora_te_text_model_encoder_layers_7_mlp_fc1.lora_down.weight": z,  # layer 7 absent
        "lora_te_text_model_encoder_layers_7_mlp_fc1.lora_up.weight": z.T,
    }
    out = apply_lora(unet, clip, {**sd, **bogus}, 1.0, 1.0)
    assert out.unmatched == sorted(bogus)
    # Without a text encoder, te keys address an absent component and are not reported.
    out = apply_lora(unet, None, {**sd, **bogus}, 1.0, 1.0)
    assert out.unmatched == sorted(k for k in bogus if not k.startswith("lora_te"))
    assert out.clip is None


def test_nothing_matched_raises_naming_the_file(tmp_path) -> None:
    unet = _unet("sd1")  # SD1 has no input_blocks.7 nor transformer depth 3
    sd = {
        "lora_unet_input_blocks_7_1_transformer_blocks_2_attn1_to_q.lora_down.weight": torch.zeros(RANK, 64),
        "lora_unet_input_blocks_7_1_transformer_blocks_2_attn1_to_q.lora_up.weight": torch.zeros(64, RANK),
    }
    path = _write(tmp_path, sd, "xl_style.safetensors")
    with pytest.raises(LoraError, match="xl_style.safetensors"):
        apply_lora(unet, None, load_lora(path), 1.0, 1.0, name=str(path))


def test_shape_mismatch_is_a_clear_error() -> None:
    unet = _unet("sd1")
    name = "lora_unet_" + _kohya(SD1_TARGETS[0][0])
    sd = {f"{name}.lora_down.weight": torch.zeros(RANK, 7), f"{name}.lora_up.weight": torch.zeros(32, RANK)}
    with pytest.raises(LoraError, match="input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"):
        apply_lora(unet, None, sd, 1.0, 1.0)


def test_half_precision_merges_in_fp32_and_keeps_dtype() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12)).half()
    down, up = torch.randn(RANK, 16, dtype=torch.float16), torch.randn(12, RANK, dtype=torch.float16)
    lora = parse_lora({"x.lora_down.weight": down, "x.lora_up.weight": up, "x.alpha": torch.tensor(2.0)})
    patched, used = merge_lora(model, lora, 0.3, key_map={"x": "0"})
    assert used == {"x"}
    want = (model[0].weight.float() + (up.float() @ down.float()) * (2.0 / RANK) * 0.3).half()
    assert patched[0].weight.dtype == torch.float16
    assert torch.equal(patched[0].weight, want)
    assert patched[0].bias is model[0].bias


def test_stacked_loras_add_up_and_leave_base_alone() -> None:
    unet = _unet("sd1")
    snap = _snapshot(unet)
    target = "input_blocks.1.1.transformer_blocks.0.attn2.to_v"
    a, b = Spec(1), Spec(2)
    a.add("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_v", unet, target, alpha=1.0)
    b.add("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", unet, target, alpha=4.0)
    once = apply_lora(unet, None, a.state_dict(), 0.5, 1.0).unet
    twice = apply_lora(once, None, b.state_dict(), 2.0, 1.0).unet
    ((_, _, da, ua, _),) = a.entries.values()
    ((_, _, db, ub, _),) = b.entries.values()
    w = unet.get_submodule(target).weight
    want = w + ua @ da * (1.0 / RANK) * 0.5 + ub @ db * (4.0 / RANK) * 2.0
    assert_close(twice.get_submodule(target).weight, want, reduction=2 * RANK)
    _assert_unchanged(unet, snap)
    assert once.get_submodule(target).weight is not twice.get_submodule(target).weight
