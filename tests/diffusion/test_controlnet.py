"""ControlNet in the original layout vs diffusers' ``ControlNetModel``.

Both are loaded from the same tiny random LDM checkpoint (diffusers through
its ``convert_controlnet_checkpoint``); residuals and the UNet output with
those residuals applied must agree to 1e-4 (float32).
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.controlnet import CONTROL_PREFIX, ControlNet, infer_hint_block
from nodes.diffusion.models.loading import CheckpointError, load_state_dict
from nodes.diffusion.models.unet import UNetModel, sdxl_vector_condition
from tests.diffusion.ldm_fixtures import (
    HINT_CHANNELS,
    SDXL_POOLED_DIM,
    SDXL_TIME_EMBED_DIM,
    TINY_UNET_ROUNDING,
    diffusers_controlnet,
    diffusers_unet,
    make_controlnet,
    make_unet,
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
    """kind -> (config, UNet sd, ControlNet sd, diffusers UNet, diffusers ControlNet)."""
    out = {}
    for kind in KINDS:
        cfg, usd = make_unet(kind)
        _, csd = make_controlnet(kind)
        out[kind] = (cfg, usd, csd, diffusers_unet(cfg, usd), diffusers_controlnet(cfg, csd))
    return out


def _inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([11.0, 640.0])
    ctx = torch.randn(2, 6, cfg.context_dim, generator=g)
    hint = torch.rand(2, 3, 64, 64, generator=g)
    y, extra = None, {}
    if cfg.adm_in_channels is not None:
        pooled = torch.randn(2, SDXL_POOLED_DIM, generator=g)
        time_ids = torch.tensor(
            [[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0], [512.0, 768.0, 0.0, 32.0, 1024.0, 1024.0]]
        )
        y = sdxl_vector_condition(pooled, time_ids, SDXL_TIME_EMBED_DIM)
        extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
    return x, t, ctx, hint, y, extra


@pytest.mark.parametrize("kind", KINDS)
def test_residuals_and_controlled_unet_match_diffusers(models, kind, tmp_path):
    cfg, usd, csd, ref_unet, ref_cn = models[kind]
    path = tmp_path / "control.safetensors"
    write_checkpoint(path, {"": csd}, unet_metadata(cfg, "nodegraph.controlnet"))
    sd, meta = load_state_dict(path)
    cn = ControlNet.from_state_dict(sd, meta)
    unet = UNetModel.from_state_dict(usd, unet_metadata(cfg))
    x, t, ctx, hint, y, extra = _inputs(cfg)
    with torch.no_grad():
        res = cn(x, hint, t, ctx, y, strength=0.7)
        down, mid = ref_cn(
            x, t, ctx, controlnet_cond=hint, conditioning_scale=0.7, return_dict=False, **extra
        )
        assert len(res.down) == len(down) == len(unet.input_blocks)
        for ours, theirs in zip(res.down, down, strict=True):
            assert_close(ours, theirs, **TINY_UNET_ROUNDING)
        assert_close(res.mid, mid, **TINY_UNET_ROUNDING)
        assert mid.abs().max() > 0.1

        got = unet(x, t, ctx, y, control=res)
        want = ref_unet(
            x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid, **extra
        ).sample
        assert_close(got, want, **TINY_UNET_ROUNDING)
        # the control really changed the output, by far more than rounding
        assert (got - unet(x, t, ctx, y)).abs().max() > 10 * tolerance(want, **TINY_UNET_ROUNDING)


def test_strength_scales_residuals_linearly_and_zero_is_no_control(models):
    cfg, usd, csd, _, _ = models["sd1"]
    cn = ControlNet.from_state_dict(csd, unet_metadata(cfg))
    unet = UNetModel.from_state_dict(usd, unet_metadata(cfg))
    x, t, ctx, hint, _, _ = _inputs(cfg)
    with torch.no_grad():
        full = cn(x, hint, t, ctx)
        half = cn(x, hint, t, ctx, strength=0.5)
        for a, b in zip(full.down + [full.mid], half.down + [half.mid], strict=True):
            assert_close(a * 0.5, b)  # one rounding: the scale is applied to the outputs
        # zero residuals added: the same kernels on the same values, so exactly equal
        torch.testing.assert_close(
            unet(x, t, ctx, control=cn(x, hint, t, ctx, strength=0.0)), unet(x, t, ctx), atol=0, rtol=0
        )


def test_two_controlnets_add(models):
    cfg, usd, csd, ref_unet, ref_cn = models["sd1"]
    cn = ControlNet.from_state_dict(csd, unet_metadata(cfg))
    unet = UNetModel.from_state_dict(usd, unet_metadata(cfg))
    x, t, ctx, hint, _, _ = _inputs(cfg)
    with torch.no_grad():
        a, b = cn(x, hint, t, ctx, strength=0.3), cn(x, 1.0 - hint, t, ctx, strength=0.9)
        d1, m1 = ref_cn(x, t, ctx, controlnet_cond=hint, conditioning_scale=0.3, return_dict=False)
        d2, m2 = ref_cn(x, t, ctx, controlnet_cond=1.0 - hint, conditioning_scale=0.9, return_dict=False)
        want = ref_unet(
            x,
            t,
            ctx,
            down_block_additional_residuals=[p + q for p, q in zip(d1, d2, strict=True)],
            mid_block_additional_residual=m1 + m2,
        ).sample
        assert_close(unet(x, t, ctx, control=a + b), want, **TINY_UNET_ROUNDING)


def test_prefixed_and_bare_files_load_the_same(models, tmp_path):
    cfg, usd, csd, _, _ = models["sd2"]
    path = tmp_path / "merged.safetensors"
    write_checkpoint(path, {"model.diffusion_model.": usd, CONTROL_PREFIX: csd}, unet_metadata(cfg))
    sd, meta = load_state_dict(path)
    merged = ControlNet.from_state_dict(sd, meta)  # falls back to the nodegraph.unet.* head metadata
    bare = ControlNet.from_state_dict(csd, unet_metadata(cfg, "nodegraph.controlnet"))
    assert merged.config == bare.config
    x, t, ctx, hint, _, _ = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(merged(x, hint, t, ctx).mid, bare(x, hint, t, ctx).mid, atol=0, rtol=0)


def test_hint_block_is_inferred_and_wrong_hint_size_is_explained(models):
    cfg, _, csd, _, _ = models["sd1"]
    assert infer_hint_block(csd) == (3, HINT_CHANNELS)
    cn = ControlNet.from_state_dict(csd, unet_metadata(cfg))
    assert cn.hint_downscale == 8
    x, t, ctx, hint, _, _ = _inputs(cfg)
    with pytest.raises(ValueError, match=r"hint is \(32, 32\), expected \(64, 64\)"):
        cn(x, hint[..., :32, :32], t, ctx)
    with torch.no_grad():  # a single hint image serves the whole batch
        torch.testing.assert_close(
            cn(x, hint[:1], t, ctx).mid, cn(x, hint[:1].expand(2, -1, -1, -1), t, ctx).mid
        )


def test_controlnet_with_missing_tensor_names_the_component(models):
    cfg, _, csd, _, _ = models["sd1"]
    broken = {k: v for k, v in csd.items() if k != "zero_convs.2.0.bias"}
    with pytest.raises(
        CheckpointError, match=r"(?s)ControlNet: .*missing keys \(1\): zero_convs\.2\.0\.bias"
    ):
        ControlNet.from_state_dict(broken, unet_metadata(cfg))


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_folder_layout_is_renamed_and_matches(models, kind, tmp_path):
    cfg, _, csd, _, ref_cn = models[kind]
    ref_cn.save_pretrained(tmp_path / "cn")  # config.json + diffusion_pytorch_model.safetensors
    cn = ControlNet.from_diffusers_folder(tmp_path / "cn")  # heads come from config.json, no metadata
    assert cn.config == ControlNet.from_state_dict(csd, unet_metadata(cfg)).config
    x, t, ctx, hint, y, extra = _inputs(cfg, seed=4)
    with torch.no_grad():
        res = cn(x, hint, t, ctx, y)
        down, mid = ref_cn(x, t, ctx, controlnet_cond=hint, return_dict=False, **extra)
    for ours, theirs in zip([*res.down, res.mid], [*down, mid], strict=True):
        assert_close(ours, theirs, **TINY_UNET_ROUNDING)


def test_diffusers_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"attention_head_dim": 8}')
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model weights"):
        ControlNet.from_diffusers_folder(tmp_path)
