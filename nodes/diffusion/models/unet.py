"""The Stable Diffusion UNet (SD1.x / SD2.x / SDXL) in the original LDM layout.

Module and parameter names are those of ``ldm.modules.diffusionmodules.
openaimodel.UNetModel`` (``input_blocks.N.M``, ``middle_block``,
``output_blocks``, ``out``, ``time_embed``, ``label_emb``), so the tensors of a
single-file checkpoint under ``model.diffusion_model.`` load by assignment.

``input_blocks[0]`` is the stem conv; then per level ``num_res_blocks``
blocks of [ResBlock, SpatialTransformer?] and, except after the last level,
a strided-conv Downsample.  ``output_blocks`` mirror that with one extra
block per level (it consumes the skip of the Downsample / stem) and end each
level but the top one with a nearest-neighbour Upsample + conv.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SpatialTransformer
from .loading import assign_weights, build_on_meta, dtype_for, strip_prefix
from .unet_config import UNetConfig, infer_unet_config

UNET_PREFIX = "model.diffusion_model."


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """LDM sinusoidal embedding: ``[cos(t*f_i), sin(t*f_i)]`` with f_i = max_period^(-i/half).

    Cosines come first (diffusers calls this ``flip_sin_to_cos=True``) and the
    exponent is divided by ``half`` (``downscale_freq_shift=0``).  Computed in
    float32 whatever the model dtype: timesteps up to 1000 lose the phase in fp16.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.reshape(-1).float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sdxl_vector_condition(
    pooled: torch.Tensor, size_conditions: torch.Tensor, embed_dim: int = 256
) -> torch.Tensor:
    """SDXL's ``y``: pooled text embedding ++ Fourier features of the size conditions.

    ``size_conditions`` is ``(batch, k)``: for the base model the six numbers
    original (h, w), crop (top, left), target (h, w); each is embedded with
    ``timestep_embedding(.., embed_dim)`` (256 for real SDXL) and flattened.
    """
    b = size_conditions.shape[0]
    sizes = timestep_embedding(size_conditions.reshape(-1), embed_dim).reshape(b, -1)
    return torch.cat([pooled.float(), sizes], dim=-1).to(pooled.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) evaluated in float32 (as LDM does) so fp16 inputs don't overflow."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the timestep embedding added in between."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 was a Dropout in the original; keeps the conv at ``out_layers.3``.
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (key ``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x (or to an explicit size, for odd latent sizes) then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling lacks bf16 kernels on some backends
            x = x.float()
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x.to(dtype))


class TimestepEmbedSequential(nn.Sequential):
    """A block whose layers each get what they need: emb (ResBlock), context (attention)."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, output_size)
            else:
                x = layer(x)
        return x


@dataclass
class ControlResiduals:
    """What a ControlNet adds to the UNet.

    ``down`` has one entry per UNet input block (stem included), in
    input-block order; each is added to that block's skip connection before
    the decoder consumes it.  ``mid`` is added to the middle-block output.
    ``None`` entries are skipped.  Several ControlNets combine with ``+``.
    """

    down: list[torch.Tensor | None]
    mid: torch.Tensor | None

    def __add__(self, other: ControlResiduals) -> ControlResiduals:
        if len(self.down) != len(other.down):
            raise ValueError("ControlNets disagree on the number of residuals")

        def add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            return b if a is None else a if b is None else a + b

        return ControlResiduals(
            [add(a, b) for a, b in zip(self.down, other.down, strict=True)], add(self.mid, other.mid)
        )

    def scaled(self, strength: float) -> ControlResiduals:
        return ControlResiduals(
            [None if d is None else d * strength for d in self.down],
            None if self.mid is None else self.mid * strength,
        )


def _as_residuals(
    control: ControlResiduals | Sequence[torch.Tensor] | Mapping | None,
) -> ControlResiduals | None:
    if control is None or isinstance(control, ControlResiduals):
        return control
    if isinstance(control, Mapping):
        return ControlResiduals(list(control.get("down", [])), control.get("mid"))
    items = list(control)  # ComfyUI-like: one per input block, then the middle one
    return ControlResiduals(items[:-1], items[-1])


def _stack(cfg: UNetConfig, ch: int, out_ch: int, depth: int) -> list[nn.Module]:
    layers: list[nn.Module] = [ResBlock(ch, cfg.time_embed_dim, out_ch)]
    if depth:
        heads, dim_head = cfg.heads_for(out_ch)
        layers.append(
            SpatialTransformer(
                out_ch,
                heads,
                dim_head,
                depth,
                cfg.context_dim,
                cfg.use_linear_in_transformer,
                cfg.upcast_attention,
            )
        )
    return layers


def build_encoder(module: nn.Module, cfg: UNetConfig) -> list[int]:
    """Create ``time_embed``, ``label_emb``, ``input_blocks`` and ``middle_block`` on ``module``.

    Shared by the UNet and the ControlNet (whose encoder is a copy of the
    UNet's).  Returns the channel count of every input block's output.
    """
    mc, ted = cfg.model_channels, cfg.time_embed_dim
    module.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
    if cfg.adm_in_channels is not None:
        module.label_emb = nn.Sequential(
            nn.Sequential(nn.Linear(cfg.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        )
    elif cfg.num_classes is not None:
        module.label_emb = nn.Embedding(cfg.num_classes, ted)
    blocks = [TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))]
    chans = [mc]
    ch = mc
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks[level]):
            blocks.append(TimestepEmbedSequential(*_stack(cfg, ch, mc * mult, cfg.transformer_depth[level])))
            ch = mc * mult
            chans.append(ch)
        if level != len(cfg.channel_mult) - 1:
            blocks.append(TimestepEmbedSequential(Downsample(ch)))
            chans.append(ch)
    module.input_blocks = nn.ModuleList(blocks)
    heads, dim_head = cfg.heads_for(ch)
    module.middle_block = TimestepEmbedSequential(
        ResBlock(ch, ted, ch),
        SpatialTransformer(
            ch,
            heads,
            dim_head,
            cfg.transformer_depth_middle,
            cfg.context_dim,
            cfg.use_linear_in_transformer,
            cfg.upcast_attention,
        ),
        ResBlock(ch, ted, ch),
    )
    return chans


def embed(
    module: nn.Module,
    cfg: UNetConfig,
    timesteps: torch.Tensor,
    y: torch.Tensor | None,
    batch: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Timestep (+ class / SDXL vector) embedding for a batch of ``batch``."""
    timesteps = timesteps.reshape(-1)
    if timesteps.numel() == 1 and batch > 1:
        timesteps = timesteps.expand(batch)
    emb = module.time_embed(timestep_embedding(timesteps, cfg.model_channels).to(dtype))
    if cfg.adm_in_channels is not None or cfg.num_classes is not None:
        if y is None:
            raise ValueError("this model is class/vector conditioned: pass y")
        if y.shape[0] != batch:
            raise ValueError(f"y has batch {y.shape[0]}, expected {batch}")
        emb = emb + module.label_emb(y if cfg.num_classes is not None else y.to(dtype))
    elif y is not None:
        raise ValueError("this model takes no y (it has no label_emb)")
    return emb


class UNetModel(nn.Module):
    """LDM UNet: ``forward(x, timesteps, context, y=None, control=None)`` -> predicted noise/v."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg, mc = config, config.model_channels
        chans = build_encoder(self, cfg)
        ch = chans[-1]
        out_blocks = []
        j = 0
        for level in reversed(range(len(cfg.channel_mult))):
            width = mc * cfg.channel_mult[level]
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = _stack(cfg, ch + chans.pop(), width, cfg.transformer_depth_output[j])
                ch = width
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                out_blocks.append(TimestepEmbedSequential(*layers))
                j += 1
        self.output_blocks = nn.ModuleList(out_blocks)
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        return self.out[2].weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None,
        y: torch.Tensor | None = None,
        control: ControlResiduals | Sequence[torch.Tensor] | Mapping | None = None,
    ) -> torch.Tensor:
        """Denoiser output for latents ``x`` (b, c, h, w) at ``timesteps`` (b,) or scalar.

        ``context`` is the (b, tokens, context_dim) text conditioning, ``y``
        the (b, adm_in_channels) SDXL vector (see ``sdxl_vector_condition``).
        ``control``: ``ControlResiduals``, a ``{"down": [...], "mid": t}``
        mapping, or a sequence of one tensor per input block followed by the
        middle-block tensor.  Output is in ``x``'s dtype.
        """
        ctrl = _as_residuals(control)
        if ctrl is not None and len(ctrl.down) not in (0, len(self.input_blocks)):
            raise ValueError(
                f"control has {len(ctrl.down)} down residuals, UNet has {len(self.input_blocks)}"
            )
        in_dtype = x.dtype
        dtype = self.dtype
        h = x.to(dtype)
        if context is not None:
            context = context.to(dtype)
        emb = embed(self, self.config, timesteps.to(x.device), y, x.shape[0], dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        if ctrl is not None and ctrl.mid is not None:
            h = h + ctrl.mid.to(dtype)
        if ctrl is not None:
            for i, residual in enumerate(ctrl.down):
                if residual is not None:
                    skips[i] = skips[i] + residual.to(dtype)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            # Upsample to the skip we will meet next so odd latent sizes work.
            size = tuple(skips[-1].shape[-2:]) if skips else None
            h = block(h, emb, context, size)
        return self.out(h).to(in_dtype)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        metadata: Mapping[str, str] | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        config: UNetConfig | None = None,
    ) -> UNetModel:
        """Build from a full checkpoint (``model.diffusion_model.*``) or a bare UNet state dict.

        ``dtype`` defaults to ``dtype_for(device, state_dict)`` (stored precision and size).
        """
        if any(k.startswith(UNET_PREFIX) for k in state_dict):
            state_dict = strip_prefix(state_dict, UNET_PREFIX)
        config = config or infer_unet_config(state_dict, metadata)
        dtype = dtype or dtype_for(device, state_dict)
        model = build_on_meta(cls, config)
        assign_weights(model, state_dict, name="UNet", device=device, dtype=dtype)
        return model
