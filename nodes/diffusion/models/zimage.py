"""The Z-Image (and Z-Image-Turbo) single-stream DiT, in the key layout ComfyUI loads (its Lumina2 ``NextDiT``).

Parameter names are those of ``z_image*.safetensors`` in ComfyUI's
``models/diffusion_models/`` (the ``model.diffusion_model.`` prefix stripped): fused
``attention.qkv``, ``attention.out``, ``attention.q_norm`` / ``k_norm``, ``x_embedder``,
``final_layer``; the diffusers layout is renamed by :func:`convert_diffusers_zimage_to_comfy`.
:func:`zimage_config_from_state_dict` reads the architecture from shapes.

Structure (Tongyi's S3-DiT): image patches (2x2, features ordered (ph, pw, c)) and the
caption features (Qwen3 hidden states, ``cap_embedder`` = RMS norm + linear) are each
padded to a multiple of 32 tokens with a learned pad token and refined separately —
``noise_refiner`` blocks (timestep-modulated) for the image, ``context_refiner`` blocks
(unmodulated) for the caption — then concatenated (image first) and run through the
main ``layers``.  Blocks are "sandwich" RMS-normed (norm before and after attention and
the SwiGLU MLP) with tanh-gated residuals; modulation comes from a 256-wide timestep
embedding only (no pooled text).  Positions are 3-axis RoPE (theta 256) over ids
``(1 + j, 0, 0)`` for caption token ``j`` and ``(caption_len + 1, row, col)`` for image
tokens (``caption_len`` after padding); pad tokens of the image sit at ``(0, 0, 0)``.

:meth:`ZImageTransformer.forward` takes sigma and returns the velocity ``noise - x0`` in
image layout.  The network itself is trained on ``t = 1 - sigma`` and predicts
``x0 - noise``: the forward feeds ``1 - sigma`` and negates the output, as diffusers'
ZImagePipeline and ComfyUI's model wrapper do.  Captions of different lengths in one
batch (a prompt and its negative) are given as a padded tensor plus ``context_mask``;
only the masked-in tokens are used, as diffusers keeps only the real tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .flux import timestep_embedding
from .layers import (
    Linear,
    RMSScale,
    block_indices,
    cast_to,
    chunked_mlp,
    chunked_mlp_ok,
    init_weights,
    linear,
    sdpa_merge_heads,
)

__all__ = [
    "ZImageConfig",
    "ZImageTransformer",
    "axes_dims_for_head_dim",
    "build_zimage_from_state_dict",
    "convert_diffusers_zimage_to_comfy",
    "detect_zimage_layout",
    "zimage_config_from_state_dict",
]

#: Token sequences (image and caption) are padded to a multiple of this with learned pad tokens.
SEQ_MULTIPLE = 32
PATCH = 2


@dataclass(frozen=True)
class ZImageConfig:
    """Shape hyper-parameters (defaults: Z-Image / Z-Image-Turbo 6B)."""

    in_channels: int = 16
    dim: int = 3840
    num_layers: int = 30
    num_refiner_layers: int = 2
    num_heads: int = 30
    ffn_hidden: int = 10240
    cap_feat_dim: int = 2560
    adaln_dim: int = 256
    t_mid_dim: int = 1024
    qk_norm: bool = True
    norm_eps: float = 1e-5
    rope_theta: float = 256.0
    axes_dims: tuple[int, ...] = (32, 48, 48)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if sum(self.axes_dims) != self.head_dim or any(a % 2 for a in self.axes_dims):
            raise ValueError(f"axes_dims {self.axes_dims} must be even and sum to the head dim {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


def axes_dims_for_head_dim(head_dim: int) -> tuple[int, int, int]:
    """Z-Image's rotary split, 1/4 for the sequence axis and 3/8 each for rows and columns
    ((32, 48, 48) for its 128-wide heads).  The split is not stored in checkpoints."""
    if head_dim % 16:
        raise ValueError(f"Z-Image head dimension must be a multiple of 16, got {head_dim}")
    return (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)


# --------------------------------------------------------------------------------------------
# Blocks (attribute names are ComfyUI's checkpoint keys)
# --------------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, cfg: ZImageConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.qkv = Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = Linear(cfg.dim, cfg.dim, bias=False)
        hd = cfg.head_dim
        self.q_norm = RMSScale(hd, eps=1e-5, param="weight") if cfg.qk_norm else None
        self.k_norm = RMSScale(hd, eps=1e-5, param="weight") if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention over ``x`` ``(B, L, dim)``; ``rope``: complex rotations ``(B, L, 1, D/2)``.

        q, k and v are three products on row slices of the fused weight (views, no copy), so
        each comes out dense in ``(B, L, H, D)`` for the norm and the rotation (one complex
        multiply) -- on CPU cheaper than one wide product whose interleaved output every
        later step has to stride through."""
        b, n, _ = x.shape
        q, k, v = (linear(x, w).view(b, n, self.heads, -1) for w in cast_to(self.qkv.weight, x).chunk(3))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rotate(q, rope), _rotate(k, rope)
        return self.out(sdpa_merge_heads(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask))


def _rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x`` ``(B, L, H, D)`` by the complex ``rope``, in float32."""
    if x.dtype != torch.float32:
        return _rotate(x.float(), rope).to(x.dtype)
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rope).flatten(-2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = Linear(dim, hidden, bias=False)
        self.w2 = Linear(hidden, dim, bias=False)
        self.w3 = Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if chunked_mlp_ok(x, self.w1, self.w2, self.w3):  # CPU inference: slices of the hidden width
            return chunked_mlp(x, self.w1, self.w2, "silu", gate=self.w3)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Sandwich-normed attention + SwiGLU; ``modulated`` blocks scale the inputs and tanh-gate the residuals."""

    def __init__(self, cfg: ZImageConfig, modulated: bool) -> None:
        super().__init__()
        d, eps = cfg.dim, cfg.norm_eps
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(d, cfg.ffn_hidden)
        self.attention_norm1 = RMSScale(d, eps=eps, param="weight")
        self.ffn_norm1 = RMSScale(d, eps=eps, param="weight")
        self.attention_norm2 = RMSScale(d, eps=eps, param="weight")
        self.ffn_norm2 = RMSScale(d, eps=eps, param="weight")
        self.adaLN_modulation = nn.Sequential(Linear(cfg.adaln_dim, 4 * d)) if modulated else None

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None, adaln: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        if self.adaLN_modulation is None:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), rope, mask))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(adaln)[:, None].chunk(4, dim=-1)
        attn = self.attention(_scaled(self.attention_norm1(x), scale_msa), rope, mask)
        x = torch.addcmul(x, gate_msa.tanh(), self.attention_norm2(attn))
        mlp = self.feed_forward(_scaled(self.ffn_norm1(x), scale_mlp))
        return torch.addcmul(x, gate_mlp.tanh(), self.ffn_norm2(mlp))


def _scaled(normed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``normed * (1 + scale)``; in place at inference (``normed`` is a fresh norm output)."""
    return normed * (1 + scale) if torch.is_grad_enabled() else normed.mul_(1 + scale)


class FinalLayer(nn.Module):
    def __init__(self, cfg: ZImageConfig) -> None:
        super().__init__()
        self.linear = Linear(cfg.dim, PATCH * PATCH * cfg.in_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(cfg.adaln_dim, cfg.dim))

    def forward(self, x: torch.Tensor, adaln: torch.Tensor) -> torch.Tensor:
        scale = 1 + self.adaLN_modulation(adaln)[:, None]
        return self.linear(F.layer_norm(x, (x.shape[-1],), eps=1e-6) * scale)


class _TimestepEmbedder(nn.Module):
    def __init__(self, cfg: ZImageConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(Linear(256, cfg.t_mid_dim), nn.SiLU(), Linear(cfg.t_mid_dim, cfg.adaln_dim))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ZImageTransformer(nn.Module):
    """Z-Image flow transformer; :meth:`forward` returns the velocity ``noise - x0`` at ``sigma``.

    Built uninitialised (see :mod:`.layers`): load weights with
    :func:`build_zimage_from_state_dict` or call :meth:`init_weights` to train from scratch.
    """

    def __init__(self, cfg: ZImageConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.dim
        self.x_embedder = Linear(PATCH * PATCH * cfg.in_channels, d)
        self.final_layer = FinalLayer(cfg)
        self.noise_refiner = nn.ModuleList(TransformerBlock(cfg, True) for _ in range(cfg.num_refiner_layers))
        self.context_refiner = nn.ModuleList(TransformerBlock(cfg, False) for _ in range(cfg.num_refiner_layers))
        self.t_embedder = _TimestepEmbedder(cfg)
        self.cap_embedder = nn.Sequential(RMSScale(cfg.cap_feat_dim, eps=cfg.norm_eps, param="weight"),
                                          Linear(cfg.cap_feat_dim, d))  # fmt: skip
        self.x_pad_token = nn.Parameter(torch.empty(1, d))
        self.cap_pad_token = nn.Parameter(torch.empty(1, d))
        self.layers = nn.ModuleList(TransformerBlock(cfg, True) for _ in range(cfg.num_layers))

    def init_weights(self, generator: torch.Generator | None = None) -> ZImageTransformer:
        init_weights(self, generator)
        with torch.no_grad():
            self.x_pad_token.zero_()
            self.cap_pad_token.zero_()
        return self

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity for latents ``x`` (``B, 16, H, W``) at sigma ``timestep`` (``B`` or scalar).

        ``context``: Qwen3 hidden states ``(B, L, cap_feat_dim)``; ``context_mask`` ``(B, L)``
        marks the real tokens of each item (default: all).  Odd latent sides are padded
        circularly and cropped back.  Returns ``(B, 16, H, W)`` in ``x``'s dtype.
        """
        cfg = self.config
        b, c, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"Z-Image model expects {cfg.in_channels} latent channels, got {c}")
        if context.shape[-1] != cfg.cap_feat_dim:
            raise ValueError(f"Z-Image model expects {cfg.cap_feat_dim}-wide text features, got {context.shape[-1]} "
                             "(is the text encoder a Qwen3-4B?)")  # fmt: skip
        dtype = x.dtype
        pad_h, pad_w = -h % PATCH, -w % PATCH
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        hp, wp = x.shape[2] // PATCH, x.shape[3] // PATCH
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        # The network's time runs the other way: t = 1 - sigma (x 1000 inside the embedding).
        adaln = self.t_embedder.mlp(timestep_embedding(1.0 - timestep.float()).to(dtype))

        cap, cap_lens = self._captions(context.to(dtype), context_mask)
        img = self._image_tokens(x, hp * wp)
        img_rope, cap_rope = _rope_tables(cap_lens, cap.shape[1], hp, wp, img.shape[1], cfg, x.device)
        cap_mask = _key_mask(cap_lens, cap.shape[1], img.shape[1], x.device)
        for block in self.noise_refiner:
            img = block(img, img_rope, None, adaln)
        for block in self.context_refiner:
            cap = block(cap, cap_rope, None if cap_mask is None else cap_mask[..., img.shape[1] :])
        joint = torch.cat([img, cap], dim=1)
        rope = torch.cat([img_rope, cap_rope], dim=1)
        for block in self.layers:
            joint = block(joint, rope, cap_mask, adaln)
        out = self.final_layer(joint[:, : hp * wp], adaln)
        return -_unpatchify(out, hp, wp)[:, :, :h, :w]

    def _captions(self, context: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, list[int]]:
        """Embedded caption tokens ``(B, Lc, dim)``: each item's real tokens then its pad tokens up to
        a multiple of 32 (rows past that, up to the batch's longest, are zeros and masked out)."""
        b, length, _ = context.shape
        if mask is None:
            lens = [length] * b
            keep = None
        else:
            keep = mask.to(torch.bool)
            lens = [int(n) for n in keep.sum(dim=1)]
        if min(lens) == 0:
            raise ValueError("Z-Image needs at least one caption token per item (an empty mask was given)")
        padded = [n + (-n % SEQ_MULTIPLE) for n in lens]
        embedded = self.cap_embedder(context)
        out = embedded.new_zeros(b, max(padded), embedded.shape[-1])
        pad_token = self.cap_pad_token.to(embedded.dtype)
        for i, (n, total) in enumerate(zip(lens, padded, strict=True)):
            out[i, :n] = embedded[i] if keep is None else embedded[i][keep[i]]
            out[i, n:total] = pad_token
        return out, padded

    def _image_tokens(self, x: torch.Tensor, n: int) -> torch.Tensor:
        tokens = self.x_embedder(_patchify(x))
        pad = -n % SEQ_MULTIPLE
        if not pad:
            return tokens
        return torch.cat([tokens, self.x_pad_token.to(tokens.dtype).expand(x.shape[0], pad, -1)], dim=1)


def _patchify(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H/2 * W/2, 4C)`` with features ordered (ph, pw, c), as Z-Image."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // PATCH) * (w // PATCH), PATCH * PATCH * c)


def _unpatchify(x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
    b = x.shape[0]
    x = x.view(b, hp, wp, PATCH, PATCH, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, -1, hp * PATCH, wp * PATCH)


def _key_mask(cap_lens: list[int], cap_width: int, n_img: int, device: torch.device) -> torch.Tensor | None:
    """Boolean ``(B, 1, 1, n_img + cap_width)`` mask of real keys, or None when every caption fills the width."""
    if all(n == cap_width for n in cap_lens):
        return None
    idx = torch.arange(cap_width, device=device)
    cap_ok = idx[None, :] < torch.tensor(cap_lens, device=device)[:, None]
    img_ok = torch.ones(len(cap_lens), n_img, dtype=torch.bool, device=device)
    return torch.cat([img_ok, cap_ok], dim=1)[:, None, None, :]


def _rope_tables(
    cap_lens: list[int], cap_width: int, hp: int, wp: int, n_img_padded: int, cfg: ZImageConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Complex rotation tables ``(B, L, 1, D/2)`` for the image tokens and the caption tokens of each item."""
    b = len(cap_lens)
    ids = torch.zeros(b, n_img_padded, 3, dtype=torch.float64, device=device)
    grid_r, grid_c = torch.meshgrid(torch.arange(hp, device=device), torch.arange(wp, device=device), indexing="ij")
    ids[:, : hp * wp, 0] = torch.tensor(cap_lens, dtype=torch.float64, device=device)[:, None] + 1
    ids[:, : hp * wp, 1] = grid_r.reshape(-1).double()
    ids[:, : hp * wp, 2] = grid_c.reshape(-1).double()
    cap_ids = torch.zeros(b, cap_width, 3, dtype=torch.float64, device=device)
    cap_ids[..., 0] = torch.arange(1, cap_width + 1, dtype=torch.float64, device=device)
    return _tables(ids, cfg), _tables(cap_ids, cfg)


def _tables(ids: torch.Tensor, cfg: ZImageConfig) -> torch.Tensor:
    """``exp(i angle)`` per position and channel pair, ``(B, L, 1, D/2)`` complex64 for :func:`_rotate`.
    The angles are rounded to float32 before the cos/sin, as Z-Image's own tables are."""
    angles = []
    for i, d in enumerate(cfg.axes_dims):
        omega = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
        angles.append((ids[..., i, None] * omega).float())
    a = torch.cat(angles, dim=-1).unsqueeze(2)
    return torch.polar(torch.ones_like(a), a)


# --------------------------------------------------------------------------------------------
# Layouts, config inference, conversion
# --------------------------------------------------------------------------------------------


def detect_zimage_layout(keys: Iterable[str]) -> Literal["comfy", "diffusers"] | None:
    """``"comfy"`` (ComfyUI/Tongyi single file) / ``"diffusers"`` for a Z-Image state dict (prefix stripped)."""
    keyset = set(keys)
    if not {"cap_embedder.0.weight", "layers.0.adaLN_modulation.0.weight"} <= keyset:
        return None
    if "x_embedder.weight" in keyset and "layers.0.attention.qkv.weight" in keyset:
        return "comfy"
    if "all_x_embedder.2-1.weight" in keyset and "layers.0.attention.to_q.weight" in keyset:
        return "diffusers"
    return None


def zimage_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> ZImageConfig:
    """Read a Z-Image config from the shapes of a ComfyUI-layout state dict (prefix stripped).

    Head width = length of a qk-norm weight; the rotary split follows
    :func:`axes_dims_for_head_dim`; RoPE base (256) and norm epsilon (1e-5) are not stored.
    """
    try:
        dim, patch_in = (int(s) for s in sd["x_embedder.weight"].shape)
        head_dim = int(sd["layers.0.attention.q_norm.weight"].shape[0])
        qkv_out = int(sd["layers.0.attention.qkv.weight"].shape[0])
        if qkv_out != 3 * dim:
            raise ValueError(f"Z-Image attention with {qkv_out} qkv rows for width {dim} (grouped kv heads?) "
                             "is not supported")  # fmt: skip
        return ZImageConfig(
            in_channels=patch_in // (PATCH * PATCH),
            dim=dim,
            num_layers=_count(sd, "layers."),
            num_refiner_layers=_count(sd, "noise_refiner."),
            num_heads=dim // head_dim,
            ffn_hidden=int(sd["layers.0.feed_forward.w1.weight"].shape[0]),
            cap_feat_dim=int(sd["cap_embedder.0.weight"].shape[0]),
            adaln_dim=int(sd["t_embedder.mlp.2.weight"].shape[0]),
            t_mid_dim=int(sd["t_embedder.mlp.0.weight"].shape[0]),
            axes_dims=axes_dims_for_head_dim(head_dim),
        )
    except KeyError as exc:
        missing = exc.args[0]
        raise ValueError(f"not a complete Z-Image transformer (ComfyUI layout): tensor {missing!r} is missing") from exc


def _count(keys: Iterable[str], prefix: str) -> int:
    idx = block_indices(keys, prefix)
    return max(idx) + 1 if idx else 0


_RENAMES = (
    ("all_x_embedder.2-1.", "x_embedder."),
    ("all_final_layer.2-1.", "final_layer."),
    (".attention.to_out.0.", ".attention.out."),
    (".attention.norm_q.", ".attention.q_norm."),
    (".attention.norm_k.", ".attention.k_norm."),
)
_QKV = (".attention.to_q.", ".attention.to_k.", ".attention.to_v.")


def convert_diffusers_zimage_to_comfy(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``ZImageTransformer2DModel`` state dict to ComfyUI's keys (inverse of diffusers' converter).

    Only the 2x2 image patching every released model uses is supported; q/k/v are
    concatenated into ``attention.qkv`` (copies), everything else is passed through.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.startswith(("all_x_embedder.", "all_final_layer.")) and ".2-1." not in key:
            raise KeyError(f"diffusers Z-Image key {key!r}: only the 2x2 patch embedder is supported")
        part = next((p for p in _QKV if p in key), None)
        if part is not None:
            qkv.setdefault(key.replace(part, ".attention.qkv."), {})[part] = value
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        out[key] = value
    for key, pieces in qkv.items():
        if len(pieces) != 3:
            raise KeyError(f"diffusers Z-Image state dict lacks part of {key!r}")
        out[key] = torch.cat([pieces[p] for p in _QKV], dim=0)
    return out


def build_zimage_from_state_dict(
    sd: Mapping[str, torch.Tensor], config: ZImageConfig | None = None
) -> ZImageTransformer:
    """Build on the meta device and adopt ``sd`` (ComfyUI or diffusers layout, prefix stripped) strictly.

    An unused ``norm_final.weight`` some single files carry is dropped, as diffusers does.
    """
    layout = detect_zimage_layout(sd.keys())
    if layout is None:
        raise ValueError("not a Z-Image transformer state dict (neither ComfyUI nor diffusers keys found)")
    if layout == "diffusers":
        sd = convert_diffusers_zimage_to_comfy(sd)
    weights = {k: v for k, v in sd.items() if k != "norm_final.weight"}
    cfg = config or zimage_config_from_state_dict(weights)
    from .loading import adopt_on_meta

    return adopt_on_meta(ZImageTransformer, cfg, weights)
