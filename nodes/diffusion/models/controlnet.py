"""ControlNet in the original single-file layout (``cldm.ControlNet``).

A ControlNet is a trainable copy of the UNet encoder (``time_embed``,
``label_emb``, ``input_blocks``, ``middle_block``: same names, same config
inference) plus:

* ``input_hint_block``: a small conv stack that brings the pixel-space hint
  image down to latent resolution (``2**(levels-1)`` = 8x for real models)
  and is added to the output of the stem conv;
* ``zero_convs.N.0``: a 1x1 conv per input block producing that block's
  residual;
* ``middle_block_out.0``: a 1x1 conv producing the middle residual.

Files come either bare (the usual ``control_*.safetensors``) or under
``control_model.`` (ControlNet merged into a full checkpoint); both load
with ``ControlNet.from_state_dict`` by assignment.  ControlNets saved by
diffusers (``controlnet_down_blocks.*`` ..., a folder with ``config.json``)
are the one case that needs renaming: ``ldm_keys_from_diffusers`` maps
them to the original names (a pure rename, the tensors are untouched) and
``ControlNet.from_diffusers_folder`` reads the folder, taking the head
count from ``config.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .loading import (
    CheckpointError,
    assign_weights,
    build_on_meta,
    dtype_for,
    load_state_dict,
    strip_prefix,
)
from .unet import ControlResiduals, TimestepEmbedSequential, build_encoder, embed
from .unet_config import UNetConfig, infer_encoder_config

CONTROL_PREFIX = "control_model."
DEFAULT_HINT_BLOCK_CHANNELS = (16, 32, 96, 256)


def _hint_block(hint_channels: int, widths: Sequence[int], model_channels: int) -> TimestepEmbedSequential:
    """conv-SiLU, then per step (conv, SiLU, stride-2 conv, SiLU), then the output conv."""
    layers: list[nn.Module] = [nn.Conv2d(hint_channels, widths[0], 3, padding=1), nn.SiLU()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [
            nn.Conv2d(a, a, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(a, b, 3, padding=1, stride=2),
            nn.SiLU(),
        ]
    layers.append(nn.Conv2d(widths[-1], model_channels, 3, padding=1))
    return TimestepEmbedSequential(*layers)


def infer_hint_block(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    """(hint_channels, per-step widths) from ``input_hint_block.N.weight`` shapes."""
    pattern = re.compile(r"input_hint_block\.(\d+)\.weight$")
    convs = sorted(int(m.group(1)) for k in state_dict if (m := pattern.match(k)))
    steps = len(convs) // 2
    if steps < 1 or convs != list(range(0, 4 * steps - 1, 2)):
        raise ValueError(f"unsupported input_hint_block layout (conv indices {convs})")
    shape = lambda i: tuple(state_dict[f"input_hint_block.{i}.weight"].shape)  # noqa: E731
    widths = [shape(0)[0]] + [shape(4 * k + 4)[0] for k in range(steps - 1)]
    return shape(0)[1], tuple(widths)


_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def is_diffusers_controlnet(state_dict: Mapping[str, Any]) -> bool:
    return "controlnet_cond_embedding.conv_in.weight" in state_dict


def _resnet(prefix: str, rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{prefix}.{_RESNET_NAMES[name]}.{tail}"


def ldm_keys_from_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``ControlNetModel`` state dict to the original LDM names.

    Input block ``1 + b*(L+1) + l`` is resnet/attention ``l`` of down block
    ``b`` (L = layers per block), the downsampler of block ``b`` is input
    block ``(b+1)*(L+1)``; the hint convs sit at even indices of
    ``input_hint_block``.  Unknown keys raise, so nothing is silently dropped.
    """
    resnet_ids = [
        int(m.group(1)) for k in state_dict if (m := re.match(r"down_blocks\.\d+\.resnets\.(\d+)\.", k))
    ]
    if not resnet_ids:
        raise ValueError("not a diffusers ControlNet state dict (no down_blocks.*.resnets)")
    per = max(resnet_ids) + 2  # input blocks per level: L resnets + 1 downsampler
    n_cond = len([k for k in state_dict if re.match(r"controlnet_cond_embedding\.blocks\.\d+\.weight$", k)])
    rules: list[tuple[str, Any]] = [
        (r"time_embedding\.linear_([12])\.(.+)", lambda m: f"time_embed.{2 * int(m[1]) - 2}.{m[2]}"),
        (r"add_embedding\.linear_([12])\.(.+)", lambda m: f"label_emb.0.{2 * int(m[1]) - 2}.{m[2]}"),
        (r"conv_in\.(.+)", lambda m: f"input_blocks.0.0.{m[1]}"),
        (r"controlnet_cond_embedding\.conv_in\.(.+)", lambda m: f"input_hint_block.0.{m[1]}"),
        (
            r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)",
            lambda m: f"input_hint_block.{2 * int(m[1]) + 2}.{m[2]}",
        ),
        (r"controlnet_cond_embedding\.conv_out\.(.+)", lambda m: f"input_hint_block.{2 * n_cond + 2}.{m[1]}"),
        (
            r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: _resnet(f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0", m[3]),
        ),
        (
            r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
            lambda m: f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}",
        ),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
            lambda m: f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}",
        ),
        (r"mid_block\.resnets\.([01])\.(.+)", lambda m: _resnet(f"middle_block.{2 * int(m[1])}", m[2])),
        (r"mid_block\.attentions\.0\.(.+)", lambda m: f"middle_block.1.{m[1]}"),
        (r"controlnet_down_blocks\.(\d+)\.(.+)", lambda m: f"zero_convs.{m[1]}.0.{m[2]}"),
        (r"controlnet_mid_block\.(.+)", lambda m: f"middle_block_out.0.{m[1]}"),
    ]
    compiled = [(re.compile(p), f) for p, f in rules]
    out: dict[str, torch.Tensor] = {}
    for key in state_dict:
        for pattern, rename in compiled:
            if m := pattern.fullmatch(key):
                out[rename(m)] = state_dict[key]
                break
        else:
            raise ValueError(f"unsupported key in diffusers ControlNet: {key!r}")
    return out


def _heads_from_diffusers_config(config: Mapping[str, Any]) -> dict[str, int]:
    """diffusers' ``attention_head_dim`` is really a head *count* (per level if a list)."""
    heads = config.get("num_attention_heads") or config.get("attention_head_dim")
    if heads is None:
        return {}
    if isinstance(heads, int):
        return {"num_heads": heads}
    widths = config["block_out_channels"]
    head_dims = {w // h for w, h in zip(widths, heads, strict=True)}
    if len(head_dims) == 1:
        return {"num_head_channels": head_dims.pop()}
    if len(set(heads)) == 1:
        return {"num_heads": heads[0]}
    raise ValueError(f"head layout {heads} for widths {widths} is neither constant count nor constant size")


class ControlNet(nn.Module):
    """``forward(x, hint, timesteps, context, y=None, strength=1.0) -> ControlResiduals``."""

    def __init__(
        self,
        config: UNetConfig,
        hint_channels: int = 3,
        hint_block_channels: Sequence[int] = DEFAULT_HINT_BLOCK_CHANNELS,
    ) -> None:
        super().__init__()
        self.config = config
        self.hint_downscale = 2 ** (len(hint_block_channels) - 1)
        chans = build_encoder(self, config)
        self.input_hint_block = _hint_block(hint_channels, tuple(hint_block_channels), config.model_channels)
        self.zero_convs = nn.ModuleList(TimestepEmbedSequential(nn.Conv2d(c, c, 1)) for c in chans)
        self.middle_block_out = TimestepEmbedSequential(nn.Conv2d(chans[-1], chans[-1], 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.middle_block_out[0].weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        hint: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None,
        y: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> ControlResiduals:
        """Residuals for the UNet, multiplied by ``strength``.

        ``hint`` is the control image in [0, 1], (b or 1, hint_channels, H, W)
        with H, W = latent size x ``hint_downscale`` (8 for real models).
        """
        dtype = self.dtype
        expected = (x.shape[-2] * self.hint_downscale, x.shape[-1] * self.hint_downscale)
        if tuple(hint.shape[-2:]) != expected:
            raise ValueError(
                f"hint is {tuple(hint.shape[-2:])}, expected {expected} for latents {tuple(x.shape)}"
            )
        if hint.shape[0] == 1 and x.shape[0] > 1:
            hint = hint.expand(x.shape[0], *hint.shape[1:])
        h = x.to(dtype)
        if context is not None:
            context = context.to(dtype)
        emb = embed(self, self.config, timesteps.to(x.device), y, x.shape[0], dtype)
        guide = self.input_hint_block(hint.to(dtype), emb, context)
        down: list[torch.Tensor | None] = []
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs, strict=True)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guide
            down.append(zero_conv(h, emb, context) * strength)
        h = self.middle_block(h, emb, context)
        return ControlResiduals(down, self.middle_block_out(h, emb, context) * strength)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        metadata: Mapping[str, str] | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        diffusers_config: Mapping[str, Any] | None = None,
    ) -> ControlNet:
        """Build from a bare ControlNet state dict, one under ``control_model.``, or a diffusers one.

        Heads: ``diffusers_config`` (a diffusers ``config.json``) if given,
        else metadata ``nodegraph.controlnet.num_head_channels`` /
        ``.num_heads`` (falling back to the ``nodegraph.unet.*`` keys), else
        the family rules of ``unet_config``.
        """
        if any(k.startswith(CONTROL_PREFIX) for k in state_dict):
            state_dict = strip_prefix(state_dict, CONTROL_PREFIX)
        if is_diffusers_controlnet(state_dict):
            state_dict = ldm_keys_from_diffusers(state_dict)
        heads = _heads_from_diffusers_config(diffusers_config) if diffusers_config else {}
        meta = dict(metadata or {})
        for key in ("num_head_channels", "num_heads", "upcast_attention"):
            if f"nodegraph.unet.{key}" in meta:
                meta.setdefault(f"nodegraph.controlnet.{key}", meta[f"nodegraph.unet.{key}"])
        config = infer_encoder_config(state_dict, meta, **heads)
        hint_channels, widths = infer_hint_block(state_dict)
        dtype = dtype or dtype_for(device, state_dict)
        model = build_on_meta(cls, config, hint_channels, widths)
        assign_weights(model, state_dict, name="ControlNet", device=device, dtype=dtype)
        return model

    @classmethod
    def from_diffusers_folder(
        cls,
        folder: str | os.PathLike[str],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> ControlNet:
        """Load a ControlNet saved by diffusers (``config.json`` + weights file)."""
        folder = os.fspath(folder)
        try:
            with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot read config.json of diffusers ControlNet {folder!r}: {exc}"
            ) from exc
        for name in (
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.fp16.bin",
        ):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                state_dict, metadata = load_state_dict(path)
                return cls.from_state_dict(
                    state_dict, metadata, device=device, dtype=dtype, diffusers_config=config
                )
        raise CheckpointError(f"no diffusion_pytorch_model weights in diffusers ControlNet folder {folder!r}")
