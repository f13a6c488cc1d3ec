"""Tiny random checkpoints in the original (LDM) single-file layouts, plus diffusers references.

Checkpoints are built through *our* modules (so their key set is what our
loaders expect) with every parameter randomised, including the ones LDM
zero-initialises: a zero ``out`` conv or ``proj_out`` would make parity
tests pass vacuously.  ``diffusers_unet`` / ``diffusers_controlnet``
convert the same tensors with diffusers' own single-file converters and
load them with a strict check, which is what proves our layout is the real
LDM one.  Other test modules reuse these helpers for full-checkpoint tests:

    cfg, unet_sd = make_unet("sd1")
    write_checkpoint(path, {UNET_PREFIX: unet_sd}, unet_metadata(cfg))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch
from safetensors.torch import save_file

from nodes.diffusion.models.unet import UNET_PREFIX, UNetModel
from nodes.diffusion.models.unet_config import UNetConfig

__all__ = [
    "UNET_PREFIX",
    "CONTROL_PREFIX",
    "SDXL_TIME_EMBED_DIM",
    "SDXL_POOLED_DIM",
    "tiny_unet_config",
    "randomize_",
    "make_unet",
    "unet_metadata",
    "write_checkpoint",
    "diffusers_unet_config",
    "diffusers_unet",
    "HINT_CHANNELS",
    "make_controlnet",
    "diffusers_controlnet",
]

CONTROL_PREFIX = "control_model."
# Our tiny SDXL-like model: y = pooled (32) ++ 6 size conditions x 8 Fourier dims.
SDXL_POOLED_DIM = 32
SDXL_TIME_EMBED_DIM = 8
# Rounding bound for whole-model parity of these tiny UNets and ControlNets (see tests/tolerance.py): the
# longest reduction is a 3x3 conv over a 2 x 64-channel skip concatenation; the errors that add up along the
# residual stream come from ~32 blocks on the longest (SDXL) path: 11 res blocks, 18 transformer blocks and
# the conv_in / down / up / out convolutions.
TINY_UNET_ROUNDING = {"reduction": 2 * 64 * 9, "depth": 32}
HINT_CHANNELS = (8, 8, 16, 16)  # 4 entries -> 8x hint downsampling, like the real (16, 32, 96, 256)


def tiny_unet_config(kind: str) -> UNetConfig:
    """Small configs that keep each family's *structural* traits.

    sd1:  conv projection, fixed num_heads, a last level without attention.
    sd2:  linear projection, num_head_channels.
    sdxl: linear projection, num_head_channels, depth pattern [0, 2, 3],
          label_emb fed by pooled text ++ size-condition Fourier features.
    """
    if kind == "sd1":
        return UNetConfig(
            in_channels=4,
            out_channels=4,
            model_channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=(1, 1, 1),
            transformer_depth=(1, 1, 0),
            transformer_depth_middle=1,
            transformer_depth_output=(0, 0, 1, 1, 1, 1),
            context_dim=24,
            use_linear_in_transformer=False,
            num_heads=8,
        )
    if kind == "sd2":
        return UNetConfig(
            in_channels=4,
            out_channels=4,
            model_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=(1, 1),
            transformer_depth=(1, 1),
            transformer_depth_middle=1,
            transformer_depth_output=(1, 1, 1, 1),
            context_dim=40,
            use_linear_in_transformer=True,
            num_head_channels=16,
        )
    if kind == "sdxl":
        return UNetConfig(
            in_channels=4,
            out_channels=4,
            model_channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=(1, 1, 1),
            transformer_depth=(0, 2, 3),
            transformer_depth_middle=3,
            transformer_depth_output=(3, 3, 2, 2, 0, 0),
            context_dim=48,
            use_linear_in_transformer=True,
            num_head_channels=16,
            adm_in_channels=SDXL_POOLED_DIM + 6 * SDXL_TIME_EMBED_DIM,
        )
    raise ValueError(kind)


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter with seeded noise scaled like a fan-in init (norm weights near 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return module


def make_unet(kind: str, seed: int = 0) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    """(config, bare LDM UNet state dict) for a tiny random model of ``kind``."""
    cfg = tiny_unet_config(kind)
    model = randomize_(UNetModel(cfg), seed)
    return cfg, {k: v.contiguous() for k, v in model.state_dict().items()}


def unet_metadata(cfg: UNetConfig, namespace: str = "nodegraph.unet") -> dict[str, str]:
    """The safetensors metadata our loader reads for heads (shapes can't tell them)."""
    if cfg.num_head_channels > 0:
        return {f"{namespace}.num_head_channels": str(cfg.num_head_channels)}
    return {f"{namespace}.num_heads": str(cfg.num_heads)}


def write_checkpoint(
    path: str | os.PathLike[str],
    components: Mapping[str, Mapping[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Save ``{prefix: state_dict}`` as one single-file ``.safetensors``; returns the flat dict."""
    flat = {prefix + k: v.contiguous() for prefix, sd in components.items() for k, v in sd.items()}
    save_file(flat, os.fspath(path), metadata=dict(metadata or {}))
    return flat


# ----------------------------------------------------------------------------- diffusers references


def _depths_arg(cfg: UNetConfig) -> int | list[int]:
    nonzero = {d for d in cfg.transformer_depth if d}
    if len(nonzero) == 1 and cfg.transformer_depth_middle in nonzero:
        return nonzero.pop()  # an int also covers a non-attention level (SD1's last)
    if cfg.transformer_depth_middle != cfg.transformer_depth[-1]:
        raise ValueError("diffusers takes the middle depth from the last level")
    return list(cfg.transformer_depth)


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """The ``UNet2DConditionModel`` config equivalent to ``cfg``.

    diffusers quirk: ``attention_head_dim`` is really the number of heads
    (per level when derived from ``num_head_channels``).
    """
    if len(set(cfg.num_res_blocks)) != 1:
        raise ValueError("diffusers needs the same num_res_blocks on every level")
    widths = [cfg.model_channels * m for m in cfg.channel_mult]
    heads = [w // cfg.num_head_channels for w in widths] if cfg.num_head_channels > 0 else cfg.num_heads
    down = ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in cfg.transformer_depth]
    up = ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(cfg.transformer_depth)]
    config = {
        "sample_size": 8,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": widths,
        "layers_per_block": cfg.num_res_blocks[0],
        "cross_attention_dim": cfg.context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": cfg.use_linear_in_transformer,
        "transformer_layers_per_block": _depths_arg(cfg),
        "class_embed_type": None,
        "addition_embed_type": None,
    }
    if cfg.adm_in_channels is not None:
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=cfg.adm_in_channels,
        )
    return config


def _strict_load(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    result = model.load_state_dict(dict(sd), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise AssertionError(
            f"{what}: converted LDM checkpoint does not fit diffusers: missing={result.missing_keys} "
            f"unexpected={result.unexpected_keys}"
        )


def diffusers_unet(cfg: UNetConfig, ldm_sd: Mapping[str, torch.Tensor]):
    """diffusers ``UNet2DConditionModel`` holding ``ldm_sd`` via diffusers' own LDM converter."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = diffusers_unet_config(cfg)
    full = {UNET_PREFIX + k: v for k, v in ldm_sd.items()}
    converted = convert_ldm_unet_checkpoint(full, config)
    model = UNet2DConditionModel(**config)
    _strict_load(model, converted, "UNet")
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- ControlNet


def make_controlnet(kind: str, hint_channels: int = 3, seed: int = 1):
    """(config, bare LDM ControlNet state dict) matching ``tiny_unet_config(kind)``."""
    from nodes.diffusion.models.controlnet import ControlNet

    cfg = tiny_unet_config(kind)
    model = randomize_(ControlNet(cfg, hint_channels=hint_channels, hint_block_channels=HINT_CHANNELS), seed)
    return cfg, {k: v.contiguous() for k, v in model.state_dict().items()}


def diffusers_controlnet(cfg: UNetConfig, ldm_sd: Mapping[str, torch.Tensor], hint_channels: int = 3):
    """diffusers ``ControlNetModel`` holding ``ldm_sd`` via ``convert_controlnet_checkpoint``.

    Built from a config dict: ``ControlNetModel.from_single_file(original_config=...)``
    raises TypeError in diffusers 0.42.1.  That converter ignores ``label_emb``,
    so the SDXL vector embedding is mapped by hand here.
    """
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    ucfg = diffusers_unet_config(cfg)
    config = {k: v for k, v in ucfg.items() if k not in ("sample_size", "out_channels", "up_block_types")}
    config.update(conditioning_channels=hint_channels, conditioning_embedding_out_channels=HINT_CHANNELS)
    full = {CONTROL_PREFIX + k: v for k, v in ldm_sd.items()}
    converted = convert_controlnet_checkpoint(full, config)
    if cfg.adm_in_channels is not None:
        for a, b in (("linear_1", "0.0"), ("linear_2", "0.2")):
            for p in ("weight", "bias"):
                converted[f"add_embedding.{a}.{p}"] = ldm_sd[f"label_emb.{b}.{p}"]
    model = ControlNetModel(**config)
    _strict_load(model, converted, "ControlNet")
    return model.eval().requires_grad_(False)
