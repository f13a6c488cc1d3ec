"""The FLUX.1 transformer (dev, schnell, and the fill/canny/depth variants), in the original BFL key layout.

Parameter names are the keys of Black Forest Labs' ``flux1-*.safetensors``
files (what ComfyUI users put in ``models/diffusion_models/``), so those load
by assignment without renaming; the diffusers layout is converted by
:func:`convert_diffusers_flux_to_bfl`.  The architecture is read from tensor
shapes by :func:`flux_config_from_state_dict`.

Structure (as in BFL's ``flux.model.Flux``): the latent is cut into 2x2
patches (``in_channels`` = 4 x latent channels); text tokens (T5) and image
tokens first run through ``depth`` double-stream blocks (separate weights per
stream, joint attention), then are concatenated for ``depth_single_blocks``
single-stream blocks (one fused linear for qkv + MLP).  Every block is
modulated (shift/scale/gate) by a vector made of the timestep, the CLIP
pooled text embedding and, for guidance-distilled models (dev), the guidance
strength.  Positions enter through 3-axis rotary embeddings over ids
``(0, row, col)`` for image tokens and ``(0, 0, 0)`` for text tokens.

:meth:`FluxTransformer.forward` takes and returns latents in image layout
(``B, C, H, W``) like ComfyUI's FLUX model: it pads odd sides (circularly,
as ComfyUI), patchifies, builds the ids, and undoes all of it on the way out.
The timestep is the flow-matching sigma in [0, 1]; it (and the guidance) is
multiplied by 1000 for the sinusoidal embedding, as BFL and diffusers do.
Computation runs in the dtype of the input latent; weights stored in another
dtype (fp16, bf16, float8) are cast one layer at a time (:mod:`.layers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

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
    "PATCH",
    "FluxConfig",
    "FluxTransformer",
    "axes_dim_for_head_dim",
    "convert_diffusers_flux_to_bfl",
    "detect_flux_layout",
    "flux_config_from_state_dict",
    "build_flux_from_state_dict",
]

#: Side of the square patches FLUX cuts latents into (fixed by the architecture).
PATCH = 2


@dataclass(frozen=True)
class FluxConfig:
    """Shape hyper-parameters of a FLUX.1 transformer (BFL's ``FluxParams``; defaults = FLUX.1-dev).

    ``in_channels``/``out_channels`` count channels *after* 2x2 patchify: 64 = 16 latent
    channels x 4.  Fill (384) and canny/depth (128) variants take extra channels concatenated to
    the latent; their output is still 64.  ``axes_dim`` splits the head dimension between the
    rotary axes (index, row, column); its sum is the head dimension.
    """

    in_channels: int = 64
    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    context_in_dim: int = 4096
    vec_in_dim: int = 768
    mlp_ratio: float = 4.0
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: int = 10000
    qkv_bias: bool = True
    guidance_embed: bool = True
    out_channels: int = 64

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.head_dim or any(a % 2 for a in self.axes_dim):
            raise ValueError(f"axes_dim {self.axes_dim} must be even and sum to the head dim {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return round(self.hidden_size * self.mlp_ratio)

    @property
    def latent_in_channels(self) -> int:
        """Channels of the image-layout input (latent plus any concatenated conditioning)."""
        return self.in_channels // (PATCH * PATCH)

    @property
    def latent_channels(self) -> int:
        """Channels of the output velocity (16 for every FLUX.1 model)."""
        return self.out_channels // (PATCH * PATCH)


def axes_dim_for_head_dim(head_dim: int) -> tuple[int, int, int]:
    """Rotary split of a head dimension: row and column get ``2 * (7 * head_dim // 32)`` each, index the rest.

    This is FLUX.1's split for head_dim 128 -> (16, 56, 56), extended to other even sizes
    (64 -> (8, 28, 28), 32 -> (4, 14, 14), 16 -> (4, 6, 6)) so tiny models follow one rule.
    The split is not stored in checkpoints; models with another split must pass a config.
    """
    if head_dim % 2 or head_dim < 8:
        raise ValueError(f"FLUX head dimension must be even and >= 8, got {head_dim}")
    side = 2 * (7 * head_dim // 32)
    return (head_dim - 2 * side, side, side)


# --------------------------------------------------------------------------------------------
# Building blocks (attribute names are BFL checkpoint keys)
# --------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """BFL's sinusoidal embedding of ``1000 * t``: ``[cos, sin]`` halves, computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (1000.0 * t.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_layer = Linear(in_dim, hidden)
        self.out_layer = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class QKNorm(nn.Module):
    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.query_norm = RMSScale(head_dim)
        self.key_norm = RMSScale(head_dim)


class SelfAttention(nn.Module):
    """Holds one stream's qkv/norm/proj weights; the joint attention itself is :func:`attention`."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.norm = QKNorm(dim // heads)
        self.proj = Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return split_heads(self.qkv(x), self.heads, self.norm)


def split_heads(qkv: torch.Tensor, heads: int, norm: QKNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, L, 3*H*D)`` -> normed q, normed k, v, each ``(B, H, L, D)``."""
    b, n, _ = qkv.shape
    # Normalise in (B, L, H, D) where the rows are dense, then swap to (B, H, L, D) as views.
    q, k, v = qkv.view(b, n, 3, heads, -1).unbind(2)
    return norm.query_norm(q).transpose(1, 2), norm.key_norm(k).transpose(1, 2), v.transpose(1, 2)


def rope_tables(ids: torch.Tensor, axes_dim: tuple[int, ...], theta: int) -> torch.Tensor:
    """Rotations ``(B, 1, L, D/2)`` for ids ``(B, L, n_axes)``: complex64 ``cos + i sin`` of angles taken
    in float64 (cos and sin rounded to float32 as BFL's tables are), one per channel pair."""
    angles = []
    for i, dim in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim)
        angles.append(ids[..., i].double()[..., None] * omega)
    a = torch.cat(angles, dim=-1).unsqueeze(1)
    return torch.complex(a.cos().float(), a.sin().float())


def apply_rope(x: torch.Tensor, rope: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate consecutive channel pairs ``(x0, x1)`` -> ``(x0 c - x1 s, x1 c + x0 s)``, in float32.

    One complex multiply of the pairs by ``rope`` (:func:`rope_tables`): a single pass, where the
    real-valued form (BFL's) needs a pair swap and two multiplies.  ``out``: where to write (a slice
    of a joint text+image buffer saves a concatenation)."""
    if x.dtype != torch.float32:
        res = apply_rope(x.float(), rope).to(x.dtype)
        return res if out is None else out.copy_(res)
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    if out is None:
        return torch.view_as_real(pairs * rope).flatten(-2)
    torch.mul(pairs, rope, out=torch.view_as_complex(out.unflatten(-1, (-1, 2))))
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """RoPE on q/k, scaled dot-product attention, heads merged back: ``(B, L, H*D)``."""
    return sdpa_merge_heads(apply_rope(q, pe), apply_rope(k, pe), v)


def joint_attention(txt: tuple[torch.Tensor, ...], img: tuple[torch.Tensor, ...], pe: torch.Tensor) -> torch.Tensor:
    """Attention over text then image tokens; rotated q/k are written straight into the joint buffers."""
    n = txt[0].shape[2]
    joint = []
    for t, i in zip(txt[:2], img[:2], strict=True):
        b, h, _, d = t.shape
        buf = torch.empty(b, h, n + i.shape[2], d, dtype=t.dtype, device=t.device)
        apply_rope(t, pe[:, :, :n], out=buf[:, :, :n])
        apply_rope(i, pe[:, :, n:], out=buf[:, :, n:])
        joint.append(buf)
    return sdpa_merge_heads(joint[0], joint[1], torch.cat([txt[2], img[2]], dim=2))


class Modulation(nn.Module):
    """``lin(silu(vec))`` split into (shift, scale, gate) triples: two for double blocks, one for single."""

    def __init__(self, dim: int, double: bool) -> None:
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = Linear(dim, self.multiplier * dim)

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        return list(self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=1e-6), 1 + scale)


class GeluMLP(nn.Sequential):
    """Linear, GELU (tanh), Linear: BFL's ``nn.Sequential`` and its keys (``0.*``, ``2.*``).

    At CPU inference on plain layers one :func:`.layers.chunked_mlp` call: the GELU fused into
    the first product by oneDNN where it runs, otherwise over slices of the hidden width."""

    def __init__(self, hidden: int, mlp_hidden: int) -> None:
        super().__init__(Linear(hidden, mlp_hidden), nn.GELU(approximate="tanh"), Linear(mlp_hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if chunked_mlp_ok(x, self[0], self[2]):
            return chunked_mlp(x, self[0], self[2], "gelu_tanh")
        return super().forward(x)


def _mlp(hidden: int, mlp_hidden: int) -> GeluMLP:
    return GeluMLP(hidden, mlp_hidden)


class DoubleStreamBlock(nn.Module):
    """Separate weights for image and text tokens, one joint attention over both (text first)."""

    def __init__(self, cfg: FluxConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.img_mod = Modulation(h, double=True)
        self.img_attn = SelfAttention(h, cfg.num_heads, cfg.qkv_bias)
        self.img_mlp = _mlp(h, cfg.mlp_hidden)
        self.txt_mod = Modulation(h, double=True)
        self.txt_attn = SelfAttention(h, cfg.num_heads, cfg.qkv_bias)
        self.txt_mlp = _mlp(h, cfg.mlp_hidden)

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec)
        iq, ik, iv = self.img_attn.qkv_heads(_modulate(img, i_shift1, i_scale1))
        tq, tk, tv = self.txt_attn.qkv_heads(_modulate(txt, t_shift1, t_scale1))
        joint = joint_attention((tq, tk, tv), (iq, ik, iv), pe)
        n_txt = txt.shape[1]
        txt_out, img_out = joint[:, :n_txt], joint[:, n_txt:]
        img = torch.addcmul(img, i_gate1, self.img_attn.proj(img_out))
        img = torch.addcmul(img, i_gate2, self.img_mlp(_modulate(img, i_shift2, i_scale2)))
        txt = torch.addcmul(txt, t_gate1, self.txt_attn.proj(txt_out))
        txt = torch.addcmul(txt, t_gate2, self.txt_mlp(_modulate(txt, t_shift2, t_scale2)))
        return img, txt


class SingleStreamBlock(nn.Module):
    """One stream; ``linear1`` yields qkv and the MLP input at once, ``linear2`` merges both outputs."""

    def __init__(self, cfg: FluxConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads = cfg.num_heads
        self.hidden = h
        self.mlp_hidden = cfg.mlp_hidden
        self.linear1 = Linear(h, 3 * h + cfg.mlp_hidden)
        self.linear2 = Linear(h + cfg.mlp_hidden, h)
        self.norm = QKNorm(cfg.head_dim)
        self.modulation = Modulation(h, double=False)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        x_mod = _modulate(x, shift, scale)
        # linear1 as two products on row slices of its weight: q/k/v and the MLP activation each
        # come out dense (no strided split), the GELU fused into its product where oneDNN runs.
        w1, b1, n_qkv = cast_to(self.linear1.weight, x), cast_to(self.linear1.bias, x), 3 * self.hidden
        q, k, v = split_heads(linear(x_mod, w1[:n_qkv], _rows(b1, 0, n_qkv)), self.heads, self.norm)
        mlp = linear(x_mod, w1[n_qkv:], _rows(b1, n_qkv, None), "gelu_tanh")
        # linear2 over cat(attn, mlp) computed as two products on column slices of its weight:
        # the same sum without materialising the (L, hidden + mlp_hidden) concatenation.
        w2 = cast_to(self.linear2.weight, x)
        out = linear(attention(q, k, v, pe), w2[:, : self.hidden], cast_to(self.linear2.bias, x))
        out += linear(mlp, w2[:, self.hidden :])
        return torch.addcmul(x, gate, out)


def _rows(bias: torch.Tensor | None, start: int, stop: int | None) -> torch.Tensor | None:
    return None if bias is None else bias[start:stop]


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.linear = Linear(hidden, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear(_modulate(x, shift, scale))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class FluxTransformer(nn.Module):
    """FLUX.1 flow-matching transformer; predicts the velocity ``noise - x0`` for a latent at ``sigma``.

    Built uninitialised (see :mod:`.layers`): load weights with ``load_state_dict(assign=True)``
    (:func:`build_flux_from_state_dict`) or call :meth:`init_weights` to train from scratch.
    """

    def __init__(self, cfg: FluxConfig) -> None:
        super().__init__()
        self.config = cfg
        h = cfg.hidden_size
        self.img_in = Linear(cfg.in_channels, h)
        self.time_in = MLPEmbedder(256, h)
        self.vector_in = MLPEmbedder(cfg.vec_in_dim, h)
        self.guidance_in = MLPEmbedder(256, h) if cfg.guidance_embed else None
        self.txt_in = Linear(cfg.context_in_dim, h)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(cfg) for _ in range(cfg.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single_blocks))
        self.final_layer = LastLayer(h, cfg.out_channels)

    def init_weights(self, generator: torch.Generator | None = None) -> FluxTransformer:
        """Default initialisation of every layer (the model is built uninitialised)."""
        return init_weights(self, generator)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        pooled: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity for latents ``x`` (``B, in_channels/4, H, W``) at sigma ``timestep`` (``B``).

        ``context``: T5 hidden states ``(B, L, context_in_dim)``; ``pooled``: CLIP pooled
        ``(B, vec_in_dim)``; ``guidance``: distilled guidance strength ``(B)`` for dev models
        (ignored by models without a guidance embedding; when ``None`` the embedding is skipped,
        as in ComfyUI).  Returns ``(B, out_channels/4, H, W)`` in ``x``'s dtype.
        """
        cfg = self.config
        b, c, h, w = x.shape
        if c != cfg.latent_in_channels:
            raise ValueError(f"FLUX model expects {cfg.latent_in_channels} latent channels, got {c}")
        img = _patchify(x)
        hp, wp = -(-h // PATCH), -(-w // PATCH)
        dtype = x.dtype
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        if guidance is not None and guidance.numel() == 1:
            guidance = guidance.reshape(-1).expand(b)
        vec = self.time_in(timestep_embedding(timestep).to(dtype))
        if self.guidance_in is not None and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance).to(dtype))
        vec = vec + self.vector_in(pooled.to(dtype))
        img = self.img_in(img)
        txt = self.txt_in(context.to(dtype))
        # Positions do not depend on the batch item: one table broadcast over the batch.
        pe = rope_tables(_ids(1, txt.shape[1], hp, wp, x.device), cfg.axes_dim, cfg.theta)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        joint = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            joint = block(joint, vec, pe)
        out = self.final_layer(joint[:, txt.shape[1] :], vec)
        return _unpatchify(out, hp, wp)[:, :, :h, :w]


def _patchify(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H/2 * W/2, C*4)`` with channel order (c, ph, pw); odd sides padded circularly."""
    b, c, h, w = x.shape
    pad_h, pad_w = -h % PATCH, -w % PATCH
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    hp, wp = x.shape[2] // PATCH, x.shape[3] // PATCH
    x = x.view(b, c, hp, PATCH, wp, PATCH).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, hp * wp, c * PATCH * PATCH)


def _unpatchify(x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
    b = x.shape[0]
    x = x.view(b, hp, wp, -1, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, -1, hp * PATCH, wp * PATCH)


def _ids(b: int, n_txt: int, hp: int, wp: int, device: torch.device) -> torch.Tensor:
    """Position ids ``(B, n_txt + hp*wp, 3)``: zeros for text, ``(0, row, col)`` for image tokens."""
    img = torch.zeros(hp, wp, 3, device=device)
    img[..., 1] = torch.arange(hp, device=device)[:, None]
    img[..., 2] = torch.arange(wp, device=device)[None, :]
    ids = torch.cat([torch.zeros(n_txt, 3, device=device), img.reshape(-1, 3)])
    return ids.unsqueeze(0).expand(b, -1, -1)


# --------------------------------------------------------------------------------------------
# Layouts, config inference, conversion
# --------------------------------------------------------------------------------------------


def detect_flux_layout(keys: Iterable[str]) -> Literal["bfl", "diffusers"] | None:
    """``"bfl"`` / ``"diffusers"`` for a FLUX transformer state dict (component prefix stripped), else None."""
    keyset = set(keys)
    if {"img_in.weight", "double_blocks.0.img_attn.qkv.weight"} <= keyset or {
        "img_in.weight",
        "single_blocks.0.linear1.weight",
    } <= keyset:
        return "bfl"
    if "x_embedder.weight" in keyset and (
        "transformer_blocks.0.attn.add_q_proj.weight" in keyset
        or "single_transformer_blocks.0.proj_mlp.weight" in keyset
    ):
        return "diffusers"
    return None


def _count(keys: Iterable[str], prefix: str) -> int:
    idx = block_indices(keys, prefix)
    return max(idx) + 1 if idx else 0


def flux_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> FluxConfig:
    """Read a FLUX config from the shapes of a BFL-layout state dict (prefix stripped).

    Head dim = length of a qk-norm scale; heads = hidden / head dim; rotary split by
    :func:`axes_dim_for_head_dim`; dev vs schnell = presence of ``guidance_in``;
    fill/canny/depth = ``img_in`` input width.  ``theta`` (10000) is not stored.
    """
    try:
        return _config_from_shapes(sd)
    except KeyError as exc:
        raise ValueError(f"not a complete FLUX transformer (BFL layout): tensor {exc.args[0]!r} is missing") from exc


def _config_from_shapes(sd: Mapping[str, torch.Tensor]) -> FluxConfig:
    keys = list(sd.keys())
    hidden, in_channels = (int(s) for s in sd["img_in.weight"].shape)
    if "double_blocks.0.img_attn.norm.query_norm.scale" in sd:
        head_dim = int(sd["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0])
        mlp_hidden = int(sd["double_blocks.0.img_mlp.0.weight"].shape[0])
        qkv_bias = "double_blocks.0.img_attn.qkv.bias" in sd
    else:  # single-stream only
        head_dim = int(sd["single_blocks.0.norm.query_norm.scale"].shape[0])
        mlp_hidden = int(sd["single_blocks.0.linear1.weight"].shape[0]) - 3 * hidden
        qkv_bias = True
    return FluxConfig(
        in_channels=in_channels,
        hidden_size=hidden,
        num_heads=hidden // head_dim,
        depth=_count(keys, "double_blocks."),
        depth_single_blocks=_count(keys, "single_blocks."),
        context_in_dim=int(sd["txt_in.weight"].shape[1]),
        vec_in_dim=int(sd["vector_in.in_layer.weight"].shape[1]),
        mlp_ratio=mlp_hidden / hidden,
        axes_dim=axes_dim_for_head_dim(head_dim),
        qkv_bias=qkv_bias,
        guidance_embed="guidance_in.in_layer.weight" in sd,
        out_channels=int(sd["final_layer.linear.weight"].shape[0]),
    )


# diffusers name -> BFL name, for tensors that only change name (weight and bias alike).
_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "proj_out": "final_layer.linear",
}
_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale",
    "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
}
_SINGLE = {
    "norm.linear": "modulation.lin",
    "proj_out": "linear2",
    "attn.norm_q.weight": "norm.query_norm.scale",
    "attn.norm_k.weight": "norm.key_norm.scale",
}
#: Fused BFL tensors and the diffusers parts they concatenate (along the output dimension).
_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """Exchange the two halves of dim 0: diffusers stores the final modulation as (scale, shift), BFL (shift, scale)."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def convert_diffusers_flux_to_bfl(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``FluxTransformer2DModel`` state dict to BFL keys (the inverse of diffusers' converter).

    Separate q/k/v (and the single blocks' ``proj_mlp``) are concatenated into the fused BFL
    tensors, which copies those weights; renamed tensors are passed through untouched.
    Raises ``KeyError`` naming the first key with no BFL counterpart.
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, tuple[tuple[str, ...], dict[str, torch.Tensor]]] = {}
    for key in sd:
        stem, _, suffix = key.rpartition(".")
        parts = key.split(".")
        if parts[0] in ("transformer_blocks", "single_transformer_blocks"):
            double = parts[0] == "transformer_blocks"
            prefix = f"{'double_blocks' if double else 'single_blocks'}.{parts[1]}."
            local = ".".join(parts[2:])
            renamed = rename_by_prefix(local, _DOUBLE if double else _SINGLE)
            if renamed is not None:
                out[prefix + renamed] = sd[key]
                continue
            local_stem = local.rpartition(".")[0]
            for bfl, parts_ in (_DOUBLE_FUSED if double else _SINGLE_FUSED).items():
                if local_stem in parts_:
                    fused.setdefault(f"{prefix}{bfl}.{suffix}", (parts_, {}))[1][local_stem] = sd[key]
                    break
            else:
                raise KeyError(f"diffusers FLUX key {key!r} has no BFL counterpart")
            continue
        if stem == "norm_out.linear":
            out[f"final_layer.adaLN_modulation.1.{suffix}"] = swap_halves(sd[key])
            continue
        renamed = rename_by_prefix(key, _TOP)
        if renamed is None:
            raise KeyError(f"diffusers FLUX key {key!r} has no BFL counterpart")
        out[renamed] = sd[key]
    for bfl_key, (order, pieces) in fused.items():
        out[bfl_key] = concat_pieces(bfl_key, order, pieces, "FLUX")
    return out


def build_flux_from_state_dict(
    sd: Mapping[str, torch.Tensor], config: FluxConfig | None = None
) -> FluxTransformer:
    """Build on the meta device and adopt ``sd`` (BFL or diffusers layout, prefix stripped) strictly.

    BFL tensors are assigned as they are (memory-mapped tensors stay mapped, any dtype);
    a diffusers layout is converted first.
    """
    layout = detect_flux_layout(sd.keys())
    if layout is None:
        raise ValueError("not a FLUX transformer state dict (neither BFL nor diffusers keys found)")
    if layout == "diffusers":
        sd = convert_diffusers_flux_to_bfl(sd)
    cfg = config or flux_config_from_state_dict(sd)
    from .loading import adopt_on_meta

    return adopt_on_meta(FluxTransformer, cfg, sd)
