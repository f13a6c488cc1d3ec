"""LDM ``AutoencoderKL`` (the Stable Diffusion VAE) in the original checkpoint layout.

Parameter names equal the keys under ``first_stage_model.`` in SD1/SD2/SDXL
single-file checkpoints, so loading is: :func:`infer_vae_config` from tensor
shapes, build on the meta device, ``load_state_dict(sd, assign=True)``
(:func:`build_vae_from_state_dict` does exactly that).

The same module loads FLUX's 16-channel ``ae`` VAE (``ae.safetensors``): it is the
LDM encoder/decoder with ``z_channels`` 16 and *no* ``quant_conv``/``post_quant_conv``
(their absence is read from the keys, ``use_quant_conv=False``), scale 0.3611 and
shift 0.1159 (:data:`FLUX_SCALING_FACTOR`, :data:`FLUX_SHIFT_FACTOR`).
A VAE in diffusers' naming (a repository's ``vae/`` folder) is renamed to these keys by
:func:`convert_diffusers_vae_to_ldm` (no tensor copies).

The latent scaling factor (SD1/SD2 0.18215, SDXL 0.13025) and shift cannot be
inferred from the weights: the checkpoint loader supplies them (by model family,
or from the safetensors metadata key ``nodegraph.vae.scaling_factor``).

Encoding is deterministic: the posterior mean is returned (no sampling), which
is what img2img/inpainting pipelines want for reproducibility.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .loading import build_on_meta

__all__ = [
    "SD_SCALING_FACTOR",
    "SDXL_SCALING_FACTOR",
    "FLUX_SCALING_FACTOR",
    "FLUX_SHIFT_FACTOR",
    "SCALING_FACTOR_METADATA_KEY",
    "AutoencoderKL",
    "VAEConfig",
    "build_vae_from_state_dict",
    "convert_diffusers_vae_to_ldm",
    "is_diffusers_vae",
    "infer_vae_config",
]

SD_SCALING_FACTOR = 0.18215
SDXL_SCALING_FACTOR = 0.13025
#: FLUX.1's 16-channel ``ae``: latents are ``(mean - 0.1159) * 0.3611``.
FLUX_SCALING_FACTOR = 0.3611
FLUX_SHIFT_FACTOR = 0.1159
SCALING_FACTOR_METADATA_KEY = "nodegraph.vae.scaling_factor"


@dataclass(frozen=True)
class VAEConfig:
    """LDM ``ddconfig`` fields that determine the architecture, plus latent scaling.

    ``embed_dim`` is the latent channel count after ``quant_conv`` (equals
    ``z_channels`` in every SD VAE, but the two are independent in LDM).
    ``use_quant_conv=False``: no 1x1 convs around the latent (FLUX ``ae``; then
    ``embed_dim == z_channels``).
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_channels: int = 3
    scaling_factor: float = SD_SCALING_FACTOR
    shift_factor: float = 0.0
    use_quant_conv: bool = True

    @property
    def downscale(self) -> int:
        """Pixel size of one latent cell (8 for all SD VAEs)."""
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections.

    Some checkpoints (e.g. VAEs round-tripped through diffusers) store the q/k/v/proj_out
    weights as 2-D linear matrices; :meth:`_load_from_state_dict` reshapes those to the
    1x1-conv shape as views, so both layouts load with ``load_state_dict``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("q", "k", "v", "proj_out"):
            key = f"{prefix}{name}.weight"
            w = state_dict.get(key)
            if w is not None and w.ndim == 2:
                state_dict[key] = w[:, :, None, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, 1, c, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(tokens(self.q(y)), tokens(self.k(y)), tokens(self.v(y)))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LDM pads only right/bottom before the stride-2 conv (asymmetric, part of the trained model).
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level; attribute names (``block``, ``downsample``/``upsample``) are checkpoint keys."""

    def __init__(self, blocks: list[ResnetBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)


class _Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            cout = cfg.ch * mult
            blocks = [ResnetBlock(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]
            level = _Level(blocks)
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(cout)
            self.down.append(level)
            cin = cout
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        cin = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin)
        levels: list[_Level] = []
        for i in reversed(range(len(cfg.ch_mult))):
            cout = cfg.ch * cfg.ch_mult[i]
            level = _Level([ResnetBlock(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)])
            if i != 0:
                level.upsample = Upsample(cout)
            levels.insert(0, level)  # ``up.N`` is indexed by resolution level, not execution order
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """SD VAE. Images are BCHW in [-1, 1]; latents are scaled: ``(mean - shift) * scaling_factor``."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.use_quant_conv:
            self.quant_conv: nn.Module = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
            self.post_quant_conv: nn.Module = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        else:
            self.quant_conv = nn.Identity()
            self.post_quant_conv = nn.Identity()

    @property
    def downscale(self) -> int:
        return self.config.downscale

    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled posterior ``(mean, logvar)`` of the diagonal Gaussian."""
        moments = self.quant_conv(self.encoder(images))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic latents: the scaled posterior mean."""
        mean, _ = self.encode_moments(images)
        return (mean - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (nominally in [-1, 1]; not clamped)."""
        z = latents / self.config.scaling_factor + self.config.shift_factor
        return self.decoder(self.post_quant_conv(z))

    def decode_tiled(self, latents: torch.Tensor, tile: int = 64, overlap: int = 16) -> torch.Tensor:
        """Decode in overlapping ``tile``x``tile`` latent tiles, blended with linear feathering.

        Bounds peak memory by the tile size. Not bit-identical to :meth:`decode`: each tile's
        GroupNorm statistics and the attention only see the tile, so seams are hidden by the
        feathering, not removed. A single tile covering the input gives exactly ``decode``.
        """
        return _tiled(self.decode, latents, tile, overlap, self.downscale, upscale=True)

    def encode_tiled(self, images: torch.Tensor, tile: int = 512, overlap: int = 64) -> torch.Tensor:
        """Encode in overlapping pixel tiles (``tile``/``overlap`` rounded down to multiples of 8)."""
        return _tiled(self.encode, images, tile, overlap, self.downscale, upscale=False)


def _positions(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device, dtype) -> torch.Tensor:
    """1-D weights: linear ramps of ``overlap`` samples on interior edges, 1 elsewhere (never 0)."""
    w = torch.ones(length, device=device, dtype=dtype)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, device=device, dtype=dtype) / (overlap + 1)
        n = min(overlap, length)
        if not at_start:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if not at_end:
            w[-n:] = torch.minimum(w[-n:], ramp[:n].flip(0))
    return w


def _tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    factor: int,
    upscale: bool,
) -> torch.Tensor:
    """Run ``fn`` on overlapping tiles of ``x`` and blend with feathered weights.

    ``tile``/``overlap`` are in input units. For encoding (``upscale=False``) they are
    rounded to multiples of ``factor`` so tiles start on latent-cell boundaries.
    """
    if not upscale:
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image sides must be multiples of {factor}, got {tuple(x.shape[-2:])}")
        tile = max(factor, tile // factor * factor)
        overlap = overlap // factor * factor
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than tile ({tile})")
    _, _, h, w = x.shape
    ys, xs = _positions(h, tile, tile - overlap), _positions(w, tile, tile - overlap)

    def scale(n: int) -> int:
        return n * factor if upscale else n // factor

    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    o = scale(overlap)
    for y0 in ys:
        for x0 in xs:
            piece = fn(x[:, :, y0 : y0 + tile, x0 : x0 + tile])
            if out is None:
                out = x.new_zeros(x.shape[0], piece.shape[1], scale(h), scale(w), dtype=piece.dtype)
                weight = x.new_zeros(1, 1, scale(h), scale(w), dtype=piece.dtype)
            ph, pw = piece.shape[-2:]
            oy, ox = scale(y0), scale(x0)
            wy = _ramp(ph, o, y0 == 0, y0 + tile >= h, piece.device, piece.dtype)
            wx = _ramp(pw, o, x0 == 0, x0 + tile >= w, piece.device, piece.dtype)
            mask = wy[:, None] * wx[None, :]
            out[:, :, oy : oy + ph, ox : ox + pw] += piece * mask
            weight[:, :, oy : oy + ph, ox : ox + pw] += mask  # type: ignore[index]
    assert out is not None and weight is not None
    return out / weight


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def infer_vae_config(
    sd: Mapping[str, torch.Tensor], scaling_factor: float = SD_SCALING_FACTOR, shift_factor: float = 0.0
) -> VAEConfig:
    """Read the architecture from tensor shapes of a VAE state dict (``first_stage_model.`` stripped).

    Without ``post_quant_conv`` keys (FLUX ``ae``) the latent width comes from the encoder's output
    (mean and log-variance: 2 x ``z_channels``).
    """
    ch = int(sd["encoder.conv_in.weight"].shape[0])
    in_channels = int(sd["encoder.conv_in.weight"].shape[1])
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    ch_mult = tuple(int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in levels)
    num_res_blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
    use_quant_conv = "post_quant_conv.weight" in sd
    if use_quant_conv:
        z_channels, embed_dim = (int(s) for s in sd["post_quant_conv.weight"].shape[:2])
    else:
        z_channels = embed_dim = int(sd["encoder.conv_out.weight"].shape[0]) // 2
    return VAEConfig(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        z_channels=z_channels,
        embed_dim=embed_dim,
        use_quant_conv=use_quant_conv,
        in_channels=in_channels,
        out_channels=int(sd["decoder.conv_out.weight"].shape[0]),
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    )


def build_vae_from_state_dict(
    sd: Mapping[str, torch.Tensor], scaling_factor: float = SD_SCALING_FACTOR, shift_factor: float = 0.0
) -> AutoencoderKL:
    """Infer the config, build on the meta device and assign the (prefix-stripped) tensors in place."""
    cfg = infer_vae_config(sd, scaling_factor, shift_factor)
    model = build_on_meta(AutoencoderKL, cfg)
    model.load_state_dict(dict(sd), strict=True, assign=True)
    return model.eval()


# --------------------------------------------------------------------------------------------
# diffusers layout (e.g. the ``vae/`` folder of a diffusers FLUX or SD repository)
# --------------------------------------------------------------------------------------------

_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
         "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}  # fmt: skip
_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}


def is_diffusers_vae(keys: Iterable[str]) -> bool:
    """Whether a VAE state dict (prefix stripped) uses diffusers names (``encoder.down_blocks.*``)."""
    return any(k.startswith("encoder.down_blocks.") for k in keys)


def _diffusers_vae_key(key: str, levels: int) -> str:
    part, _, rest = key.partition(".")  # "encoder"/"decoder"/"quant_conv"/...
    if part not in ("encoder", "decoder"):
        return key
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)", rest):
        side, i, j, name, kind = m.groups()
        level = int(i) if side == "down" else levels - 1 - int(i)
        return f"{part}.{side}.{level}.block.{j}.{_RESNET[name]}.{kind}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(weight|bias)", rest):
        side, i, _, kind = m.groups()
        level = int(i) if side == "down" else levels - 1 - int(i)
        return f"{part}.{side}.{level}.{'downsample' if side == 'down' else 'upsample'}.conv.{kind}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(\w+)\.(weight|bias)", rest):
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{_RESNET[m.group(2)]}.{m.group(3)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        return f"{part}.mid.attn_1.{_ATTN[m.group(1)]}.{m.group(2)}"
    stem, _, kind = rest.rpartition(".")
    return f"{part}.{_TOP[stem]}.{kind}"


def convert_diffusers_vae_to_ldm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKL`` state dict to the LDM names this module uses (no copies).

    The inverse of diffusers' ``convert_ldm_vae_checkpoint``; decoder levels are reversed
    (diffusers numbers up-blocks in execution order, LDM by resolution).  Attention weights keep
    their 2-D linear shape (:class:`AttnBlock` accepts both).  Raises ``ValueError`` naming a key
    with no LDM counterpart.
    """
    levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks."))
    out: dict[str, torch.Tensor] = {}
    for key in sd:
        try:
            out[_diffusers_vae_key(key, levels)] = sd[key]
        except KeyError as exc:
            raise ValueError(f"diffusers VAE key {key!r} has no LDM counterpart") from exc
    return out
