"""Quantized weights kept in storage dtype: GGUF (Q8_0, Q4_K) and fp8 / scaled fp8 models, LoRA on the fly."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.loading import CheckpointError
from nodes.diffusion.models.lora import LoraError, LoraLayer, lora_delta
from nodes.diffusion.quant.gguf_file import GGUFTensor, dequantize_state_dict, open_weights, read_gguf
from nodes.diffusion.quant.gguf_write import write_gguf
from nodes.diffusion.quant.layers import (
    LoraPatch,
    QuantizedConv2d,
    QuantizedLinear,
    load_quantized,
    needs_quantized_load,
    quantized_layers,
    with_lora,
)
from tests.diffusion.quant_fixtures import build, meta_model, numpy_state, random_state, rel_err, sample_input

Q8_0, Q4_K = 8, 12
FP32_NOISE = 1e-5  # relative: same weights, differently ordered fp32 arithmetic at most
# The quantizations' own error on these outputs (per-weight rel. error ~1/254 for Q8_0, ~1/30 for our
# plain Q4_K encoder, accumulated through 7 layers); measured 0.009 and 0.12 (seeded data, so the
# figures only move by fp32 rounding between CPUs).
QUANT_ERROR = {Q8_0: 0.02, Q4_K: 0.2}


def _resident_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


@pytest.mark.parametrize("qtype", [Q8_0, Q4_K], ids=["Q8_0", "Q4_K"])
def test_gguf_model_runs_quantized_and_matches_the_dequantized_model(tmp_path, qtype: int) -> None:
    sd = random_state()
    path = tmp_path / "tiny.gguf"
    write_gguf(path, numpy_state(sd), qtype, prefix="model.diffusion_model.")
    ckpt = read_gguf(path)
    assert set(ckpt.state_dict) == set(sd) and ckpt.architecture == "sd1"
    opened, meta = open_weights(path)
    assert meta == {"general.architecture": "sd1"} and set(opened) == set(sd) and needs_quantized_load(opened)
    fc1 = ckpt.state_dict["blocks.0.fc1.weight"]
    assert isinstance(fc1, GGUFTensor) and fc1.shape == (512, 256) and fc1.ndim == 2 and fc1.numel() == 512 * 256
    assert ckpt.state_dict["blocks.0.fc1.bias"].dtype == torch.float32  # small tensors stay F32, as converters do

    model = load_quantized(meta_model(), ckpt.state_dict, name=str(path))
    quant = dict(quantized_layers(model))
    assert isinstance(quant["blocks.0.fc1"], QuantizedLinear) and quant["blocks.0.fc1"].storage.dtype == torch.uint8
    assert ("conv_in" in quant) == (qtype == Q8_0)  # 288-wide rows are whole Q8_0 blocks, not Q4_K ones
    if qtype == Q8_0:
        assert isinstance(quant["conv_in"], QuantizedConv2d)
    assert set(model.state_dict()) == set(sd)  # key names unchanged

    x = sample_input()
    got = model(x)
    reference = build(dequantize_state_dict(ckpt.state_dict, torch.float32))(x)
    original = build(sd)(x)
    assert rel_err(got, reference) <= FP32_NOISE
    err = rel_err(got, original)
    assert 0 < err <= QUANT_ERROR[qtype]

    file_bytes = sum(t.nbytes if isinstance(t, GGUFTensor) else t.numel() * t.element_size()
                     for t in ckpt.state_dict.values())
    assert _resident_bytes(model) == file_bytes
    assert file_bytes < sum(t.numel() * 4 for t in sd.values()) * (0.3 if qtype == Q8_0 else 0.25)


def _fp8_file(tmp_path, sd: dict[str, torch.Tensor], dtype: torch.dtype, scaled: bool) -> str:
    """Linear/conv weights in fp8 (per-tensor scale_weight when ``scaled``, as ComfyUI writes them)."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if t.ndim >= 2:
            scale = t.abs().max() / torch.finfo(dtype).max if scaled else torch.tensor(1.0)
            out[key] = (t / scale).to(dtype)
            if scaled:
                out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = t
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=dtype)
    path = str(tmp_path / f"tiny_{dtype}_{scaled}.safetensors")
    save_file(out, path)
    return path


@pytest.mark.parametrize(("dtype", "scaled"), [(torch.float8_e4m3fn, True), (torch.float8_e4m3fn, False),
                                               (torch.float8_e5m2, False)], ids=["e4m3fn-scaled", "e4m3fn", "e5m2"])
def test_fp8_file_stays_fp8_and_matches_upcast_at_load(tmp_path, dtype: torch.dtype, scaled: bool) -> None:
    sd = random_state(seed=4)
    path = _fp8_file(tmp_path, sd, dtype, scaled)
    file_sd, _ = open_weights(path)
    assert needs_quantized_load(file_sd) and not needs_quantized_load(sd)
    file_bytes = sum(file_sd[k].numel() * file_sd[k].element_size() for k in file_sd)

    model = load_quantized(meta_model(), file_sd, name=path)
    assert _resident_bytes(model) == file_bytes
    assert model.blocks[1].fc2.storage.dtype == dtype

    upcast = {k: (file_sd[k].float() * (file_sd[k[:-6] + "scale_weight"] if scaled and file_sd[k].ndim >= 2 else 1))
              for k in sd}
    x = sample_input()
    got = model(x)
    assert rel_err(got, build(upcast)(x)) <= FP32_NOISE
    mantissa = {torch.float8_e4m3fn: 3, torch.float8_e5m2: 2}[dtype]
    assert 0 < rel_err(got, build(sd)(x)) <= 2.0 ** -mantissa  # the format's own rounding, through the net


def test_weight_dtype_option_casts_a_float_file_and_to_dtype_keeps_storage(tmp_path) -> None:
    sd = random_state(seed=5)
    model = load_quantized(meta_model(), sd, name="fp32", weight_dtype=torch.float8_e4m3fn)
    assert model.blocks[0].fc1.storage.dtype == torch.float8_e4m3fn
    assert model.blocks[0].fc1.bias.dtype == torch.float32
    before = model(sample_input())
    model.to(torch.float32)  # would upcast a plain fp8 buffer; the layer keeps its storage
    assert model.blocks[0].fc1.storage.dtype == torch.float8_e4m3fn
    assert torch.equal(model(sample_input()), before)
    model.to(torch.float64)  # a float dtype request becomes the layers' compute dtype
    assert model.blocks[0].fc1.storage.dtype == torch.float8_e4m3fn
    assert model.blocks[0].fc1.weight.dtype == torch.float64 and model.blocks[0].fc1.bias.dtype == torch.float64
    assert torch.equal(model.blocks[0].fc1.weight, model.blocks[0].fc1.dequantized_weight(torch.float64))
    with pytest.raises(CheckpointError, match="weight_dtype"):
        load_quantized(meta_model(), sd, name="fp32", weight_dtype=torch.float16)


def test_lora_is_added_at_compute_without_touching_the_base(tmp_path) -> None:
    sd = random_state(seed=6)
    path = tmp_path / "q8.gguf"
    write_gguf(path, numpy_state(sd), Q8_0)
    ckpt = read_gguf(path)
    base = load_quantized(meta_model(), ckpt.state_dict, name="q8")
    g = torch.Generator().manual_seed(7)
    rank = 4
    lin = LoraLayer(down=torch.randn(rank, 256, generator=g) * 0.1, up=torch.randn(512, rank, generator=g) * 0.1,
                    alpha=2.0)
    conv = LoraLayer(down=torch.randn(rank, 32, 3, 3, generator=g) * 0.1,
                     up=torch.randn(256, rank, 1, 1, generator=g) * 0.1)
    x = sample_input()
    base_out = base(x)
    half = LoraLayer(down=torch.randn(rank, 256, generator=g) * 0.1, up=torch.randn(256, rank, generator=g) * 0.1)
    patched = with_lora(base, {"blocks.1.fc1": [LoraPatch(lin, 0.8)],
                               "conv_in": [LoraPatch(conv, 0.5), LoraPatch(conv, 0.25)],
                               "blocks.2.fc1": [LoraPatch(half, 1.5, start=128, stop=384, swap_halves=True)]})

    merged = dequantize_state_dict(ckpt.state_dict, torch.float32)
    merged["blocks.1.fc1.weight"] += lora_delta(lin, (512, 256)) * 0.8
    merged["conv_in.weight"] += lora_delta(conv, (256, 32, 3, 3)) * 0.75
    sliced = lora_delta(half, (256, 256)) * 1.5
    merged["blocks.2.fc1.weight"][128:384] += torch.cat([sliced[128:], sliced[:128]])
    got = patched(x)
    assert rel_err(got, build(merged)(x)) <= FP32_NOISE
    assert rel_err(got, base_out) > 1e-3  # the LoRA did something
    assert torch.equal(base(x), base_out) and base.blocks[1].fc1.lora == ()
    assert patched.blocks[0] is base.blocks[0]  # untouched branches are shared, not copied
    with pytest.raises(LoraError):
        with_lora(base, {"blocks.0.fc2": [LoraPatch(lin, 1.0)]})  # (512x256) factors on a (256x512) weight


def test_bad_files_and_mismatches_are_clear_errors(tmp_path) -> None:
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError, match="cannot read .* as GGUF"):
        read_gguf(not_gguf)
    with pytest.raises(CheckpointError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")

    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    q2 = tmp_path / "q2.gguf"
    w = GGUFWriter(str(q2), "flux")
    w.add_tensor("img_in.weight", np.zeros((4, 84), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q2_K)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(CheckpointError, match=r"Q2_K: img_in\.weight.*Q4_K"):
        read_gguf(q2)

    sd = random_state(depth=2, seed=8)
    path = tmp_path / "d2.gguf"
    write_gguf(path, numpy_state(sd), Q8_0)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_quantized(meta_model(depth=3), read_gguf(path).state_dict, name="d2")
    sd_bad = dict(sd, **{"blocks.0.fc1.weight": torch.zeros(512, 512)})
    path2 = tmp_path / "bad.gguf"
    write_gguf(path2, numpy_state(sd_bad), Q8_0)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.fc1\.weight: checkpoint \(512, 512\)"):
        load_quantized(meta_model(depth=2), read_gguf(path2).state_dict, name="bad")


def test_t5_gguf_names_map_to_the_original_keys(tmp_path) -> None:
    import numpy as np

    from nodes.diffusion.quant.gguf_file import text_encoder_state_dict

    names = {
        "token_embd.weight": "shared.weight",
        "enc.output_norm.weight": "encoder.final_layer_norm.weight",
        "enc.blk.0.attn_q.weight": "encoder.block.0.layer.0.SelfAttention.q.weight",
        "enc.blk.0.attn_rel_b.weight": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "enc.blk.0.attn_norm.weight": "encoder.block.0.layer.0.layer_norm.weight",
        "enc.blk.11.ffn_gate.weight": "encoder.block.11.layer.1.DenseReluDense.wi_0.weight",
        "enc.blk.11.ffn_up.weight": "encoder.block.11.layer.1.DenseReluDense.wi_1.weight",
        "enc.blk.11.ffn_down.weight": "encoder.block.11.layer.1.DenseReluDense.wo.weight",
        "enc.blk.11.ffn_norm.weight": "encoder.block.11.layer.1.layer_norm.weight",
        "enc.blk.11.attn_o.weight": "encoder.block.11.layer.0.SelfAttention.o.weight",
    }
    path = tmp_path / "t5.gguf"
    values = {k: float(i + 1) for i, k in enumerate(names)}  # each tensor a distinct constant
    write_gguf(path, {k: np.full((4, 32), v, np.float32) for k, v in values.items()}, Q8_0, arch="t5encoder")
    sd = text_encoder_state_dict(read_gguf(path, prefix=None))
    assert set(sd) == set(names.values())
    for old, new in names.items():  # the right tensor under each name (Q8_0 scale in fp16: rel. 2^-11)
        torch.testing.assert_close(sd[new].dequantize(), torch.full((4, 32), values[old]), rtol=2e-3, atol=0)


def test_our_unet_runs_with_fp8_weights(tmp_path) -> None:
    """Model code that reads ``layer.weight.dtype`` (UNet.dtype) sees the compute dtype, not fp8."""
    from nodes.diffusion.models.loading import build_on_meta
    from nodes.diffusion.models.unet import UNetModel
    from tests.diffusion.ldm_fixtures import make_unet

    cfg, sd = make_unet("sd1", seed=3)
    model = load_quantized(build_on_meta(UNetModel, cfg), sd, name="unet", weight_dtype=torch.float8_e4m3fn)
    assert model.dtype == torch.float32 and model.out[2].storage.dtype == torch.float8_e4m3fn
    fp8_keys = {f"{name}.weight" for name, _ in quantized_layers(model)}
    assert "out.2.weight" in fp8_keys and len(fp8_keys) > 20
    upcast = {k: (v.to(torch.float8_e4m3fn).float() if k in fp8_keys else v) for k, v in sd.items()}
    reference = UNetModel(cfg)
    reference.load_state_dict(upcast)
    reference.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([3.0, 871.0]), torch.randn(2, 7, 24, generator=g)
    got = model(x, t, ctx)
    assert rel_err(got, reference(x, t, ctx)) <= FP32_NOISE


def test_loading_never_expands_a_quantized_weight(monkeypatch) -> None:
    """Expanding at load (e.g. through a hasattr probe of ``layer.weight``) would cost a full-size pass."""
    from nodes.diffusion.quant import layers

    calls = []
    original = layers.QuantizedWeightMixin.dequantized_weight
    monkeypatch.setattr(layers.QuantizedWeightMixin, "dequantized_weight",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    model = load_quantized(meta_model(), random_state(seed=9), name="fp32", weight_dtype=torch.float8_e4m3fn)
    assert calls == [] and len(dict(quantized_layers(model))) == 8
    model(sample_input())
    assert len(calls) == 8


def test_linear_subclasses_are_quantized_and_keep_their_other_behaviour(tmp_path) -> None:
    """Transformer models use their own nn.Linear subclass (no init at construction)."""
    from torch import nn

    class NoInitLinear(nn.Linear):
        def reset_parameters(self) -> None:
            pass

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = NoInitLinear(256, 64)
            self.b = nn.Linear(64, 32)

    sd = {"a.weight": torch.randn(64, 256) / 16, "a.bias": torch.randn(64), "b.weight": torch.randn(32, 64) / 8,
          "b.bias": torch.randn(32)}
    path = tmp_path / "sub.gguf"
    write_gguf(path, numpy_state(sd), Q8_0)
    with torch.device("meta"):
        net = Net()
    net = load_quantized(net, read_gguf(path).state_dict, name="sub")
    assert isinstance(net.a, NoInitLinear) and isinstance(net.a, QuantizedLinear) and net.a.storage.dtype == torch.uint8
    net.a.reset_parameters()  # NoInitLinear's: does nothing, touches no storage
    x = torch.randn(3, 256)
    ref = torch.nn.functional.linear(x, read_gguf(path).state_dict["a.weight"].dequantize(), sd["a.bias"])
    assert rel_err(net.a(x), ref) <= FP32_NOISE
    assert type(net.a) is type(load_quantized(Net().to("meta"), read_gguf(path).state_dict, name="sub").a)


def test_fp8_mmdit_keeps_its_position_table_as_stored() -> None:
    """SD3's position table (226 M values in SD3.5-medium) is cast where the model uses it, so an fp8 load
    keeps it in the file's bf16 instead of a float32 copy twice its size; the output equals a load with
    the table upcast."""
    from nodes.diffusion.models.loading import build_on_meta
    from nodes.diffusion.models.mmdit import MMDiT, MMDiTConfig

    cfg = MMDiTConfig(hidden_size=64, num_heads=2, depth=2, context_in_dim=32, pooled_dim=16, pos_embed_max_size=8,
                      attn2_layers=(0,))
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.05).to(torch.bfloat16)
          for k, v in build_on_meta(MMDiT, cfg).state_dict().items()}
    model = load_quantized(build_on_meta(MMDiT, cfg), sd, name="sd3", weight_dtype=torch.float8_e4m3fn)
    assert model.pos_embed.dtype == torch.bfloat16 and model.pos_embed.data_ptr() == sd["pos_embed"].data_ptr()
    assert model.joint_blocks[0].x_block.attn.qkv.storage.dtype == torch.float8_e4m3fn
    upcast = load_quantized(build_on_meta(MMDiT, cfg), sd, name="sd3", weight_dtype=torch.float8_e4m3fn)
    upcast.pos_embed = upcast.pos_embed.float()
    x, ctx = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 5, 32, generator=g)
    t, y = torch.tensor([0.5]), torch.randn(1, 16, generator=g)
    with torch.no_grad():
        out, ref = model(x, t, context=ctx, pooled=y), upcast(x, t, context=ctx, pooled=y)
    assert out.abs().max() > 0 and rel_err(out, ref) < FP32_NOISE
