"""Our LDM-layout UNet, its config inference and the checkpoint loader.

The reference is diffusers' ``UNet2DConditionModel`` loaded through
diffusers' own LDM converter from the very same tiny checkpoint; outputs
must agree to 1e-4 (float32).  The checkpoints are random but every weight
(including those LDM zero-initialises) is non-zero, so each branch matters.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from nodes.diffusion.models.loading import (
    CheckpointError,
    LazySafetensors,
    assign_weights,
    build_on_meta,
    compute_dtype,
    load_state_dict,
    strip_prefix,
)
from nodes.diffusion.models.unet import UNET_PREFIX, ControlResiduals, UNetModel, sdxl_vector_condition
from nodes.diffusion.models.unet_config import UNetConfig, infer_unet_config
from tests.diffusion.ldm_fixtures import (
    SDXL_POOLED_DIM,
    SDXL_TIME_EMBED_DIM,
    TINY_UNET_ROUNDING,
    diffusers_unet,
    make_unet,
    randomize_,
    unet_metadata,
    write_checkpoint,
)
from tests.tolerance import assert_close, tolerance

KINDS = ("sd1", "sd2", "sdxl")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models():
    """kind -> (config, bare LDM state dict, diffusers reference)."""
    out = {}
    for kind in KINDS:
        cfg, sd = make_unet(kind)
        out[kind] = (cfg, sd, diffusers_unet(cfg, sd))
    return out


def _inputs(cfg: UNetConfig, h: int = 8, w: int = 8, seed: int = 0):
    """(args for ours, kwargs for diffusers) with SDXL's y built the SDXL way for both."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, h, w, generator=g)
    t = torch.tensor([3.0, 871.0])
    ctx = torch.randn(2, 7, cfg.context_dim, generator=g)
    y, extra = None, {}
    if cfg.adm_in_channels is not None:
        pooled = torch.randn(2, SDXL_POOLED_DIM, generator=g)
        # original (h, w), crop (top, left), target (h, w)
        time_ids = torch.tensor(
            [[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0], [768.0, 512.0, 16.0, 8.0, 1024.0, 896.0]]
        )
        y = sdxl_vector_condition(pooled, time_ids, SDXL_TIME_EMBED_DIM)
        extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
    return (x, t, ctx, y), extra


# ----------------------------------------------------------------------------- layout and config


@pytest.mark.parametrize("kind", KINDS)
def test_layout_loads_into_diffusers_without_missing_or_unexpected_keys(models, kind):
    cfg, sd, _ = models[kind]
    # diffusers_unet raises on any missing/unexpected key; re-run it explicitly here.
    diffusers_unet(cfg, sd)
    assert any(k.startswith("input_blocks.1.1.transformer_blocks.0.attn2.to_k") for k in sd) == (
        kind != "sdxl"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_config_is_inferred_from_shapes_and_metadata(models, kind):
    cfg, sd, _ = models[kind]
    assert infer_unet_config(sd, unet_metadata(cfg)) == cfg


def _real_config(family: str) -> UNetConfig:
    common = dict(in_channels=4, out_channels=4, model_channels=320)
    if family == "sd1":
        return UNetConfig(
            **common,
            channel_mult=(1, 2, 4, 4),
            num_res_blocks=(2,) * 4,
            transformer_depth=(1, 1, 1, 0),
            transformer_depth_middle=1,
            transformer_depth_output=(0,) * 3 + (1,) * 9,
            context_dim=768,
            use_linear_in_transformer=False,
            num_heads=8,
        )
    if family == "sd2":
        return UNetConfig(
            **common,
            channel_mult=(1, 2, 4, 4),
            num_res_blocks=(2,) * 4,
            transformer_depth=(1, 1, 1, 0),
            transformer_depth_middle=1,
            transformer_depth_output=(0,) * 3 + (1,) * 9,
            context_dim=1024,
            use_linear_in_transformer=True,
            num_head_channels=64,
        )
    return UNetConfig(
        **common,
        channel_mult=(1, 2, 4),
        num_res_blocks=(2,) * 3,
        transformer_depth=(0, 2, 10),
        transformer_depth_middle=10,
        transformer_depth_output=(10,) * 3 + (2,) * 3 + (0,) * 3,
        context_dim=2048,
        use_linear_in_transformer=True,
        num_head_channels=64,
        adm_in_channels=2816,
    )


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_real_family_shapes_give_family_and_head_rules(family):
    # Full-size models built on the meta device: shapes without memory.
    real = _real_config(family)
    sd = build_on_meta(UNetModel, real).state_dict()
    inferred = infer_unet_config(sd)  # no metadata: heads from the family rule
    assert inferred == dataclasses.replace(real, family=family)
    if family == "sdxl":
        assert sum(t.numel() for t in sd.values()) == 2_567_463_684  # the published SDXL UNet size


def test_head_overrides_take_precedence(models):
    cfg, sd, _ = models["sd2"]
    # custom + linear projection -> the SD2/SDXL rule (64 channels per head), which 32 channels can't
    # satisfy; the error says how to fix it.
    with pytest.raises(ValueError, match="nodegraph.unet.num_head_channels"):
        infer_unet_config(sd)
    assert infer_unet_config(sd, {"nodegraph.unet.num_heads": "4"}).num_heads == 4
    meta = {"nodegraph.unet.num_head_channels": "16", "nodegraph.unet.upcast_attention": "true"}
    inferred = infer_unet_config(sd, meta)
    assert (inferred.num_head_channels, inferred.upcast_attention) == (16, True)
    assert infer_unet_config(sd, meta, num_heads=2).num_heads == 2


def test_indivisible_heads_are_rejected(models):
    _, sd, _ = models["sd2"]
    with pytest.raises(ValueError, match="not divisible"):
        infer_unet_config(sd, {"nodegraph.unet.num_head_channels": "24"})


# ----------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_diffusers_from_single_file(models, kind, tmp_path):
    cfg, sd, ref = models[kind]
    path = tmp_path / f"{kind}.safetensors"
    write_checkpoint(
        path, {UNET_PREFIX: sd, "first_stage_model.": {"x.weight": torch.ones(2)}}, unet_metadata(cfg)
    )
    full, meta = load_state_dict(path)
    ours = UNetModel.from_state_dict(full, meta)
    assert ours.config == cfg
    (x, t, ctx, y), extra = _inputs(cfg)
    with torch.no_grad():
        got = ours(x, t, ctx, y)
        want = ref(x, t, ctx, **extra).sample
    assert got.shape == x.shape
    assert want.abs().max() > 0.1  # a non-trivial output, so agreement means something
    assert_close(got, want, **TINY_UNET_ROUNDING)


def test_odd_latent_size_matches_diffusers(models):
    cfg, sd, ref = models["sd1"]
    ours = UNetModel.from_state_dict(sd, unet_metadata(cfg))
    (x, t, ctx, y), extra = _inputs(cfg, h=9, w=7)
    with torch.no_grad():
        assert_close(ours(x, t, ctx), ref(x, t, ctx).sample, **TINY_UNET_ROUNDING)


def test_scalar_timestep_broadcasts_and_wrong_weights_are_detected(models):
    cfg, sd, ref = models["sd2"]
    ours = UNetModel.from_state_dict(sd, unet_metadata(cfg))
    (x, _, ctx, _), _ = _inputs(cfg)
    with torch.no_grad():
        a = ours(x, torch.tensor(500.0), ctx)
        assert_close(a, ref(x, torch.tensor([500.0, 500.0]), ctx).sample, **TINY_UNET_ROUNDING)
        other = UNetModel.from_state_dict(make_unet("sd2", seed=5)[1], unet_metadata(cfg))
        assert (other(x, torch.tensor(500.0), ctx) - a).abs().max() > 10 * tolerance(a, **TINY_UNET_ROUNDING)


def test_control_residuals_enter_skips_and_middle_like_diffusers(models):
    cfg, sd, ref = models["sd1"]
    ours = UNetModel.from_state_dict(sd, unet_metadata(cfg))
    (x, t, ctx, _), _ = _inputs(cfg)
    with torch.no_grad():
        skips = [x]
        h = x
        for block in ours.input_blocks:  # shapes of every input block's output
            h = block(h, ours.time_embed(torch.zeros(2, cfg.model_channels)), ctx)
            skips.append(h)
        g = torch.Generator().manual_seed(3)
        down = [torch.randn(s.shape, generator=g) for s in skips[1:]]
        mid = torch.randn(skips[-1].shape, generator=g)
        want = ref(
            x, t, ctx, down_block_additional_residuals=tuple(down), mid_block_additional_residual=mid
        ).sample
        for control in (ControlResiduals(down, mid), [*down, mid], {"down": down, "mid": mid}):
            assert_close(ours(x, t, ctx, control=control), want, **TINY_UNET_ROUNDING)
        assert (ours(x, t, ctx) - want).abs().max() > 10 * tolerance(want, **TINY_UNET_ROUNDING)
        with pytest.raises(ValueError, match="down residuals"):
            ours(x, t, ctx, control=ControlResiduals(down[:-1], mid))


def test_y_is_required_exactly_when_the_model_has_label_emb(models):
    cfg, sd, _ = models["sdxl"]
    ours = UNetModel.from_state_dict(sd, unet_metadata(cfg))
    (x, t, ctx, _), _ = _inputs(cfg)
    with pytest.raises(ValueError, match="pass y"):
        ours(x, t, ctx)
    cfg1, sd1, _ = models["sd1"]
    with pytest.raises(ValueError, match="no y"):
        UNetModel.from_state_dict(sd1, unet_metadata(cfg1))(x, t, torch.zeros(2, 3, 24), y=torch.zeros(2, 4))


# ----------------------------------------------------------------------------- loader


def test_meta_build_and_assign_leaves_no_meta_tensors_and_maps_fp32_weights(models, tmp_path):
    cfg, sd, _ = models["sd2"]
    path = tmp_path / "unet.safetensors"
    write_checkpoint(path, {UNET_PREFIX: sd})
    full, _ = load_state_dict(path)
    bare = strip_prefix(full, UNET_PREFIX)
    model = build_on_meta(UNetModel, cfg)
    assert all(p.is_meta for p in model.parameters())
    assign_weights(model, bare, name="UNet")
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model.out[2].weight, sd["out.2.weight"], atol=0, rtol=0)
    if os.path.exists("/proc/self/maps"):  # fp32 on CPU: the parameter *is* the memory-mapped file
        ptr = model.out[2].weight.data_ptr()
        with open("/proc/self/maps") as maps:
            owners = [
                line.split()[-1]
                for line in maps
                if int(line.split()[0].split("-")[0], 16) <= ptr < int(line.split()[0].split("-")[1], 16)
            ]
        assert owners == [str(path)]


def test_fp16_checkpoint_runs_in_fp32_on_cpu(models):
    cfg, sd, _ = models["sd1"]
    half = {k: v.half() for k, v in sd.items()}
    model = UNetModel.from_state_dict(half, unet_metadata(cfg))
    assert model.dtype == torch.float32
    assert compute_dtype("cpu", torch.float16) == torch.float32
    assert compute_dtype("cuda", torch.float16) == torch.float16
    assert compute_dtype("cuda", torch.bfloat16) == torch.bfloat16
    assert compute_dtype("mps", torch.bfloat16) == torch.float16
    assert compute_dtype("cuda", torch.float8_e4m3fn) == torch.bfloat16


def test_missing_and_unexpected_keys_are_listed_with_component_name(models):
    cfg, sd, _ = models["sd1"]
    broken = dict(sd)
    del broken["out.2.bias"]
    del broken["middle_block.1.proj_in.weight"]
    broken["input_blocks.99.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        assign_weights(build_on_meta(UNetModel, cfg), broken, name="UNet")
    msg = str(err.value)
    assert msg.startswith("UNet:")
    assert "missing keys (2): middle_block.1.proj_in.weight, out.2.bias" in msg
    assert "unexpected keys (1): input_blocks.99.0.weight" in msg


def test_shape_mismatch_is_reported_per_key(models):
    cfg, sd, _ = models["sd1"]
    broken = dict(sd, **{"out.2.bias": torch.zeros(5)})
    with pytest.raises(CheckpointError, match=r"out\.2\.bias: checkpoint \(5,\) vs model \(4,\)"):
        assign_weights(build_on_meta(UNetModel, cfg), broken, name="UNet")


class _Evil:
    """Unpickling this would create a marker file: the side effect must never happen."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_pickled_checkpoint_with_code_is_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(2), "x": _Evil(str(marker))}}
    if fmt == "zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to load .*evil.ckpt"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_pickled_checkpoint_loads_and_unwraps_state_dict(models, tmp_path, zipfile):
    cfg, sd, ref = models["sd1"]
    path = tmp_path / "model.ckpt"
    payload = {"state_dict": {UNET_PREFIX + k: v for k, v in sd.items()}, "global_step": 7}
    torch.save(payload, path, _use_new_zipfile_serialization=zipfile)
    full, meta = load_state_dict(path)
    assert meta == {} and "global_step" not in full
    model = UNetModel.from_state_dict(full, unet_metadata(cfg))
    (x, t, ctx, _), _ = _inputs(cfg)
    with torch.no_grad():
        assert_close(model(x, t, ctx), ref(x, t, ctx).sample, **TINY_UNET_ROUNDING)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt", ".pt"])
def test_truncated_file_gives_error_naming_it(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    tensors = {"a": torch.randn(64, 64), "b": torch.randn(64)}
    if suffix == ".safetensors":
        save_file(tensors, path)
    else:  # .pt: the legacy (non-zip) pickle format
        torch.save(tensors, path, _use_new_zipfile_serialization=suffix == ".ckpt")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError) as err:
        sd, _ = load_state_dict(path)
        for k in sd:  # a lazy reader may only fail on access; either way it must be our error
            sd[k].sum()
    assert repr(str(path)) in str(err.value) and "truncated or corrupt" in str(err.value)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(CheckpointError, match="unsupported"):
        load_state_dict(tmp_path / "x.onnx")


def test_lazy_safetensors_behaves_like_a_dict(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"p.a": torch.ones(2), "p.b": torch.zeros(3), "q": torch.ones(1)}, path, metadata={"k": "v"})
    sd, meta = load_state_dict(path)
    assert isinstance(sd, LazySafetensors) and meta == {"k": "v"}
    assert sorted(sd) == ["p.a", "p.b", "q"] and len(sd) == 3 and "q" in sd
    view = strip_prefix(sd, "p.")
    assert sorted(view) == ["a", "b"] and torch.equal(view["b"], torch.zeros(3)) and "q" not in view
    sd["new"] = torch.full((1,), 5.0)
    del sd["q"]
    assert sorted(sd) == ["new", "p.a", "p.b"] and sd["new"].item() == 5.0
    with pytest.raises(KeyError):
        sd["q"]


def test_lazy_safetensors_reads_unaligned_writers_and_every_dtype(tmp_path):
    """Tensors are views into one mapping when aligned; a writer that does not align gets a copy."""
    import json
    import struct

    from safetensors.torch import load_file

    tensors = {"h": torch.randn(3, 5).half(), "b": torch.randn(4).bfloat16(), "i": torch.arange(6).view(2, 3),
               "m": torch.tensor([True, False]), "e": torch.empty(0, 4)}  # fmt: skip
    path = tmp_path / "all.safetensors"
    save_file(tensors, path)
    sd, _ = load_state_dict(path)
    ref = load_file(path)
    assert all(torch.equal(sd[k], ref[k]) and sd[k].dtype == ref[k].dtype for k in tensors)
    # hand-written file whose float32 tensor starts at an odd byte offset
    header = json.dumps({"u": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                         "f": {"dtype": "F32", "shape": [3], "data_offsets": [1, 13]}}).encode()  # fmt: skip
    header += b" " * (-len(header) % 8)
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", len(header)) + header + b"\x07" + torch.tensor([1.0, 2.0, 3.0]).numpy().tobytes())
    sd, _ = load_state_dict(odd)
    assert sd["f"].tolist() == [1.0, 2.0, 3.0] and sd["u"].tolist() == [7]


def test_repeated_safetensors_loads_do_not_grow_the_python_heap(tmp_path):
    """A long-lived process reloads a checkpoint that does not fit its cache on every run."""
    import gc
    import tracemalloc

    path = tmp_path / "m.safetensors"
    save_file({f"w{i}": torch.randn(8) for i in range(300)}, path)

    def load_all() -> None:
        sd, _ = load_state_dict(path)
        for k in sd:
            sd[k]

    load_all()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            load_all()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20 * 1024, f"{grown / 20:.0f} bytes kept per load"  # safe_open.get_tensor kept ~56 B per tensor


def test_nonpersistent_buffers_are_rebuilt_after_meta_build():
    class WithBuffer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("freqs", torch.arange(4.0), persistent=False)

        def reset_nonpersistent_buffers(self, device: torch.device) -> None:
            self.freqs = torch.arange(4.0, device=device)

    model = build_on_meta(WithBuffer)
    assert model.freqs.is_meta
    assign_weights(model, {"lin.weight": torch.eye(2), "lin.bias": torch.zeros(2)}, name="toy")
    assert torch.equal(model.freqs, torch.arange(4.0))


def test_class_conditioned_unet_is_inferred_and_uses_its_label():
    cfg = dataclasses.replace(make_unet("sd2")[0], num_classes=3)
    model = randomize_(UNetModel(cfg), seed=2).eval()
    inferred = infer_unet_config(model.state_dict(), unet_metadata(cfg))
    assert inferred == cfg and isinstance(model.label_emb, torch.nn.Embedding)
    (x, t, ctx, _), _ = _inputs(cfg)
    with torch.no_grad():
        a = model(x, t, ctx, y=torch.tensor([0, 1]))
        b = model(x, t, ctx, y=torch.tensor([2, 1]))
    assert (a[0] - b[0]).abs().max() > 1e-3 and torch.allclose(a[1], b[1], atol=1e-6)
