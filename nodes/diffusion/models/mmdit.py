"""The SD3 / SD3.5 MMDiT (medium, large, large-turbo), in Stability's original key layout.

Parameter names are the keys of Stability's ``sd3*.safetensors`` files once the
``model.diffusion_model.`` prefix is stripped (what ComfyUI loads), so those files are
adopted by assignment; the diffusers layout is renamed by
:func:`convert_diffusers_mmdit_to_original`.  :func:`mmdit_config_from_state_dict` reads
the architecture from tensor shapes.

Structure (Esser et al. 2024): the latent is cut into ``p x p`` patches by a strided
convolution (``x_embedder.proj``) and a learned 2-D position table (``pos_embed``, a
``max x max`` grid of which the centred ``h x w`` crop is used) is added.  Each of the
``depth`` joint blocks holds separate weights for the text stream (``context_block``) and
the image stream (``x_block``) and runs one attention over both; every sub-layer is
modulated (shift / scale / gate, "adaLN-Zero") by ``t_embedder(1000 sigma) +
y_embedder(pooled)``.  Variants, all visible in the keys:

* SD3.5 normalises q and k per head with an RMS norm (``attn.ln_q`` / ``attn.ln_k``);
* SD3.5-medium's MMDiT-X layers add a second, image-only self-attention (``x_block.attn2``)
  modulated by three more vectors (9 instead of 6 per image block);
* the last block's text stream is "pre-only": its attention output is never used, so it
  has only ``adaLN_modulation`` (shift, scale) and ``attn.qkv``.

Attention has no positional encoding, so concatenation order inside the joint attention
does not matter (we put text first, as Stability's code).  :meth:`MMDiT.forward` takes
and returns image-layout latents like ComfyUI's model: odd sides are padded circularly to
a patch multiple and cropped back.  Computation runs in the input's dtype; weights stored
in another dtype are cast per layer (:mod:`.layers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .flux import LastLayer, swap_halves, timestep_embedding
from .layers import (
    Linear,
    RMSScale,
    block_indices,
    cast_to,
    chunked_mlp,
    chunked_mlp_ok,
    concat_pieces,
    init_weights,
    linear,
    rename_by_prefix,
    sdpa_merge_heads,
)

__all__ = [
    "MMDiT",
    "MMDiTConfig",
    "build_mmdit_from_state_dict",
    "convert_diffusers_mmdit_to_original",
    "detect_mmdit_layout",
    "mmdit_config_from_state_dict",
]

#: SD3 heads are 64 wide; files without qk-norm (SD3.0) do not store the head width.
DEFAULT_HEAD_DIM = 64


@dataclass(frozen=True)
class MMDiTConfig:
    """Shape hyper-parameters of an MMDiT (defaults: SD3.5-medium).

    ``attn2_layers``: indices of MMDiT-X blocks (with the extra image self-attention).
    ``pos_embed_max_size``: side of the learned position grid, in patches; latents larger
    than ``max * patch_size`` on a side cannot be processed.
    """

    patch_size: int = 2
    in_channels: int = 16
    hidden_size: int = 1536
    num_heads: int = 24
    depth: int = 24
    context_in_dim: int = 4096
    pooled_dim: int = 2048
    pos_embed_max_size: int = 384
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    attn2_layers: tuple[int, ...] = tuple(range(13))
    out_channels: int = 16

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        bad = [i for i in self.attn2_layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"attn2_layers {bad} outside the {self.depth} blocks")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return round(self.hidden_size * self.mlp_ratio)


# --------------------------------------------------------------------------------------------
# Building blocks (attribute names are Stability checkpoint keys)
# --------------------------------------------------------------------------------------------


class PatchConv(nn.Module):
    """The ``p x p``/stride ``p`` patch convolution, computed as one matmul on unfolded patches.

    Stored as a conv weight ``(hidden, C, p, p)`` (the checkpoint's shape); a non-overlapping
    convolution is a linear map of each patch flattened in (c, ph, pw) order.
    """

    def __init__(self, in_channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.weight = nn.Parameter(torch.empty(hidden, in_channels, patch, patch))
        self.bias = nn.Parameter(torch.empty(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` with sides multiple of ``p`` -> tokens ``(B, H/p * W/p, hidden)``."""
        b, c, h, w = x.shape
        p = self.patch
        patches = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        return linear(patches, cast_to(self.weight, x).flatten(1), cast_to(self.bias, x))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.proj = PatchConv(in_channels, hidden, patch)


def _mlp_embedder(in_dim: int, hidden: int) -> nn.Module:
    """``mlp.0`` / SiLU / ``mlp.2``: Stability's TimestepEmbedder and VectorEmbedder."""
    module = nn.Module()
    module.mlp = nn.Sequential(Linear(in_dim, hidden), nn.SiLU(), Linear(hidden, hidden))
    return module


class Attention(nn.Module):
    """One stream's fused qkv, optional per-head RMS qk-norm, and output projection."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, pre_only: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim)
        head_dim = dim // heads
        self.ln_q = RMSScale(head_dim, eps=1e-6, param="weight") if qk_norm else None
        self.ln_k = RMSScale(head_dim, eps=1e-6, param="weight") if qk_norm else None
        self.proj = None if pre_only else Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, L, dim)`` -> q, k, v ``(B, H, L, D)`` (q/k normalised when the model has qk-norm).

        Three products on row slices of the fused weight (views, no copy) rather than one: on
        CPU the three narrower GEMMs measured ~10 % faster, and each output is dense for the norm.
        """
        b, n, _ = x.shape
        w, bias = cast_to(self.qkv.weight, x), cast_to(self.qkv.bias, x)
        q, k, v = (linear(x, wi, bi).view(b, n, self.heads, -1)
                   for wi, bi in zip(w.chunk(3), bias.chunk(3), strict=True))  # fmt: skip
        if self.ln_q is not None:
            q, k = self.ln_q(q), self.ln_k(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if chunked_mlp_ok(x, self.fc1, self.fc2):
            return chunked_mlp(x, self.fc1, self.fc2, "gelu_tanh")
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


def _modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, normed, 1 + scale)


class DismantledBlock(nn.Module):
    """One stream of a joint block (Stability's name): modulation, attention weights, MLP.

    Modulation vectors: 2 (pre-only: shift, scale), 6 (shift/scale/gate for attention and
    MLP) or 9 (MMDiT-X: plus shift/scale/gate of ``attn2``).
    """

    def __init__(self, cfg: MMDiTConfig, pre_only: bool = False, attn2: bool = False) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.pre_only = pre_only
        self.n_mod = 2 if pre_only else (9 if attn2 else 6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(h, self.n_mod * h))
        self.attn = Attention(h, cfg.num_heads, cfg.qk_norm, pre_only=pre_only)
        self.attn2 = Attention(h, cfg.num_heads, cfg.qk_norm) if attn2 else None
        self.mlp = None if pre_only else Mlp(h, cfg.mlp_hidden)

    def modulation(self, c: torch.Tensor) -> list[torch.Tensor]:
        return list(self.adaLN_modulation(c)[:, None, :].chunk(self.n_mod, dim=-1))

    def finish(self, x: torch.Tensor, attn_out: torch.Tensor, mod: list[torch.Tensor]) -> torch.Tensor:
        """Gated attention residual then the gated, modulated MLP residual."""
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod[:6]
        x = torch.addcmul(x, gate_msa, self.attn.proj(attn_out))
        return self.mlp_residual(x, shift_mlp, scale_mlp, gate_mlp)

    def mlp_residual(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor):
        return torch.addcmul(x, gate, self.mlp(_modulate(_layer_norm(x), shift, scale)))


class JointBlock(nn.Module):
    """Text and image streams with separate weights and one attention over both."""

    def __init__(self, cfg: MMDiTConfig, index: int) -> None:
        super().__init__()
        self.context_block = DismantledBlock(cfg, pre_only=index == cfg.depth - 1)
        self.x_block = DismantledBlock(cfg, attn2=index in cfg.attn2_layers)

    def forward(
        self, ctx: torch.Tensor, x: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        cb, xb = self.context_block, self.x_block
        c_mod, x_mod = cb.modulation(c), xb.modulation(c)
        ctx_qkv = cb.attn.qkv_heads(_modulate(_layer_norm(ctx), c_mod[0], c_mod[1]))
        x_normed = _layer_norm(x)
        x_qkv = xb.attn.qkv_heads(_modulate(x_normed, x_mod[0], x_mod[1]))
        n_ctx = ctx.shape[1]
        joint = sdpa_merge_heads(*(torch.cat([a, b], dim=2) for a, b in zip(ctx_qkv, x_qkv, strict=True)))
        ctx_attn, x_attn = joint[:, :n_ctx], joint[:, n_ctx:]
        if xb.attn2 is None:
            x = xb.finish(x, x_attn, x_mod)
        else:
            shift2, scale2, gate2 = x_mod[6:]
            x = torch.addcmul(x, x_mod[2], xb.attn.proj(x_attn))
            self_attn = sdpa_merge_heads(*xb.attn2.qkv_heads(_modulate(x_normed, shift2, scale2)))
            x = torch.addcmul(x, gate2, xb.attn2.proj(self_attn))
            x = xb.mlp_residual(x, *x_mod[3:6])
        if cb.pre_only:
            return None, x
        return cb.finish(ctx, ctx_attn, c_mod), x


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class MMDiT(nn.Module):
    """SD3-family flow-matching transformer; predicts the velocity ``noise - x0`` at ``sigma``.

    Built uninitialised (see :mod:`.layers`): load weights with
    :func:`build_mmdit_from_state_dict` or call :meth:`init_weights` to train from scratch.
    """

    #: Cast to the compute dtype where used (after cropping), so quantized loads keep it as stored.
    keep_stored_dtype = ("pos_embed",)

    def __init__(self, cfg: MMDiTConfig) -> None:
        super().__init__()
        self.config = cfg
        h = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, h, cfg.patch_size)
        self.register_buffer("pos_embed", torch.empty(1, cfg.pos_embed_max_size**2, h))
        self.t_embedder = _mlp_embedder(256, h)
        self.y_embedder = _mlp_embedder(cfg.pooled_dim, h)
        self.context_embedder = Linear(cfg.context_in_dim, h)
        self.joint_blocks = nn.ModuleList(JointBlock(cfg, i) for i in range(cfg.depth))
        self.final_layer = LastLayer(h, cfg.patch_size**2 * cfg.out_channels)

    def init_weights(self, generator: torch.Generator | None = None) -> MMDiT:
        """Default initialisation of every layer, and a 2-D sin-cos position table (as SD3 training starts)."""
        init_weights(self, generator)
        with torch.no_grad():
            conv = self.x_embedder.proj
            bound = 1.0 / math.sqrt(conv.weight[0].numel())
            conv.weight.uniform_(-bound, bound, generator=generator)
            conv.bias.uniform_(-bound, bound, generator=generator)
            self.pos_embed.copy_(_sincos_table(self.config.hidden_size, self.config.pos_embed_max_size))
        return self

    def forward(
        self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """Velocity for latents ``x`` (``B, in_channels, H, W``) at sigma ``timestep`` (``B`` or scalar).

        ``context``: joint text embedding ``(B, L, context_in_dim)`` (CLIP-L/G hidden states
        padded to 4096 and concatenated with T5 along L); ``pooled``: CLIP-L and CLIP-G pooled
        outputs concatenated ``(B, pooled_dim)``.  Returns ``(B, out_channels, H, W)`` in
        ``x``'s dtype; sigma is embedded as ``1000 * sigma``, as ComfyUI and diffusers do.
        """
        cfg = self.config
        b, c, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"MMDiT expects {cfg.in_channels} latent channels, got {c}")
        p = cfg.patch_size
        pad_h, pad_w = -h % p, -w % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        hp, wp = x.shape[2] // p, x.shape[3] // p
        dtype = x.dtype
        tokens = self.x_embedder.proj(x) + self._cropped_pos_embed(hp, wp).to(dtype)
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        vec = self.t_embedder.mlp(timestep_embedding(timestep).to(dtype))
        vec = vec + self.y_embedder.mlp(pooled.to(dtype))
        ctx = self.context_embedder(context.to(dtype))
        for block in self.joint_blocks:
            ctx, tokens = block(ctx, tokens, vec)
        out = self.final_layer(tokens, vec)
        return _unpatchify(out, hp, wp, p)[:, :, :h, :w]

    def _cropped_pos_embed(self, hp: int, wp: int) -> torch.Tensor:
        """The centred ``hp x wp`` window of the position grid (Stability's ``cropped_pos_embed``)."""
        m = self.config.pos_embed_max_size
        if hp > m or wp > m:
            raise ValueError(
                f"latent of {hp}x{wp} patches exceeds this MMDiT's position table ({m}x{m} patches, "
                f"{m * self.config.patch_size * 8} pixels a side); use a smaller image"
            )
        top, left = (m - hp) // 2, (m - wp) // 2
        grid = self.pos_embed.view(1, m, m, -1)[:, top : top + hp, left : left + wp]
        return grid.reshape(1, hp * wp, -1)


def _unpatchify(x: torch.Tensor, hp: int, wp: int, p: int) -> torch.Tensor:
    """Tokens ``(B, hp*wp, p*p*C)`` with channel order (ph, pw, c) -> ``(B, C, hp*p, wp*p)``."""
    b = x.shape[0]
    x = x.view(b, hp, wp, p, p, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, -1, hp * p, wp * p)


def _sincos_table(dim: int, side: int) -> torch.Tensor:
    """2-D sin-cos position table ``(1, side*side, dim)`` (MAE/DiT layout: half for rows, half for columns)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(side, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def embed(coord: torch.Tensor) -> torch.Tensor:
        angles = coord.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([embed(cols), embed(rows)], dim=1)
    table = F.pad(table, (0, dim - table.shape[1]))
    return table.float().unsqueeze(0)


# --------------------------------------------------------------------------------------------
# Layouts, config inference, conversion
# --------------------------------------------------------------------------------------------


def detect_mmdit_layout(keys: Iterable[str]) -> Literal["original", "diffusers"] | None:
    """``"original"`` (Stability/ComfyUI) / ``"diffusers"`` for an MMDiT state dict (prefix stripped), else None."""
    keyset = set(keys)
    if {"x_embedder.proj.weight", "joint_blocks.0.x_block.attn.qkv.weight"} <= keyset:
        return "original"
    if {"pos_embed.proj.weight", "transformer_blocks.0.attn.add_q_proj.weight"} <= keyset:
        return "diffusers"
    return None


def mmdit_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> MMDiTConfig:
    """Read an MMDiT config from the shapes of an original-layout state dict (prefix stripped).

    Head width = length of a qk-norm weight, else 64 (every SD3 model); MMDiT-X layers =
    blocks with ``x_block.attn2``; position-grid side = sqrt of the table length.
    """
    try:
        return _config_from_shapes(sd)
    except KeyError as exc:
        raise ValueError(f"not a complete SD3 MMDiT (original layout): tensor {exc.args[0]!r} is missing") from exc


def _config_from_shapes(sd: Mapping[str, torch.Tensor]) -> MMDiTConfig:
    keys = list(sd.keys())
    hidden, in_channels, patch, _ = (int(s) for s in sd["x_embedder.proj.weight"].shape)
    table = int(sd["pos_embed"].shape[1])
    side = math.isqrt(table)
    if side * side != table:
        raise ValueError(f"SD3 position table of {table} entries is not a square grid")
    qk_norm = "joint_blocks.0.x_block.attn.ln_q.weight" in sd
    head_dim = int(sd["joint_blocks.0.x_block.attn.ln_q.weight"].shape[0]) if qk_norm else DEFAULT_HEAD_DIM
    blocks = block_indices(keys, "joint_blocks.")
    attn2 = sorted(i for i in blocks if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in sd)
    return MMDiTConfig(
        patch_size=patch,
        in_channels=in_channels,
        hidden_size=hidden,
        num_heads=hidden // head_dim,
        depth=max(blocks) + 1 if blocks else 0,
        context_in_dim=int(sd["context_embedder.weight"].shape[1]),
        pooled_dim=int(sd["y_embedder.mlp.0.weight"].shape[1]),
        pos_embed_max_size=side,
        mlp_ratio=int(sd["joint_blocks.0.x_block.mlp.fc1.weight"].shape[0]) / hidden,
        qk_norm=qk_norm,
        attn2_layers=tuple(attn2),
        out_channels=int(sd["final_layer.linear.weight"].shape[0]) // (patch * patch),
    )


_TOP = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj": "x_embedder.proj",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "context_embedder": "context_embedder",
    "proj_out": "final_layer.linear",
}
_BLOCK = {
    "attn.norm_q.weight": "x_block.attn.ln_q.weight",
    "attn.norm_k.weight": "x_block.attn.ln_k.weight",
    "attn.norm_added_q.weight": "context_block.attn.ln_q.weight",
    "attn.norm_added_k.weight": "context_block.attn.ln_k.weight",
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "attn2.norm_q.weight": "x_block.attn2.ln_q.weight",
    "attn2.norm_k.weight": "x_block.attn2.ln_k.weight",
    "attn2.to_out.0": "x_block.attn2.proj",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
}
_FUSED = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
}


def convert_diffusers_mmdit_to_original(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``SD3Transformer2DModel`` state dict to Stability's keys (inverse of diffusers' converter).

    q/k/v are concatenated into the fused ``qkv`` tensors (copies); the final modulation and
    the last block's text modulation are stored (scale, shift) by diffusers and swapped back
    to (shift, scale).  Raises ``KeyError`` naming the first key with no counterpart.
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    blocks = block_indices(sd, "transformer_blocks.")
    pre_only = {i for i in blocks if f"transformer_blocks.{i}.attn.to_add_out.weight" not in sd}
    for key, value in sd.items():
        if key.startswith("norm_out.linear."):
            out["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = swap_halves(value)
            continue
        if not key.startswith("transformer_blocks."):
            renamed = rename_by_prefix(key, _TOP)
            if renamed is None:
                raise KeyError(f"diffusers SD3 key {key!r} has no original counterpart")
            out[renamed] = value
            continue
        _, idx, local = key.split(".", 2)
        prefix = f"joint_blocks.{idx}."
        renamed = rename_by_prefix(local, _BLOCK)
        if renamed is not None:
            if local.startswith("norm1_context.") and int(idx) in pre_only:
                value = swap_halves(value)
            out[prefix + renamed] = value
            continue
        stem, _, suffix = local.rpartition(".")
        for target, parts in _FUSED.items():
            if stem in parts:
                fused.setdefault(f"{prefix}{target}.{suffix}", {})[stem] = value
                break
        else:
            raise KeyError(f"diffusers SD3 key {key!r} has no original counterpart")
    for target, pieces in fused.items():
        stem = target.rsplit(".", 1)[0].split(".", 2)[2]
        out[target] = concat_pieces(target, _FUSED[stem], pieces, "SD3")
    return out


def build_mmdit_from_state_dict(sd: Mapping[str, torch.Tensor], config: MMDiTConfig | None = None) -> MMDiT:
    """Build on the meta device and adopt ``sd`` (original or diffusers layout, prefix stripped) strictly.

    Original-layout tensors are assigned as they are (memory-mapped tensors stay mapped, any
    dtype); a diffusers layout is converted first.
    """
    layout = detect_mmdit_layout(sd.keys())
    if layout is None:
        raise ValueError("not an SD3 MMDiT state dict (neither Stability nor diffusers keys found)")
    if layout == "diffusers":
        sd = convert_diffusers_mmdit_to_original(sd)
    cfg = config or mmdit_config_from_state_dict(sd)
    from .loading import adopt_on_meta

    return adopt_on_meta(MMDiT, cfg, sd)
