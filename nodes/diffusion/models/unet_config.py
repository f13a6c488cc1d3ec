"""Infer an LDM UNet's hyper-parameters from the tensors of its state dict.

Single-file checkpoints carry no config, so everything is read off tensor
*shapes* (never values, so a lazily memory-mapped state dict stays unread):

* ``input_blocks.0.0.weight``            -> in_channels, model_channels
* ``out.2.weight``                       -> out_channels
* ``input_blocks.N.0.op.weight``         -> a Downsample, i.e. a level boundary
* ``input_blocks.N.0.out_layers.3``      -> a ResBlock and its width (channel_mult)
* ``*.1.transformer_blocks.D.*``         -> attention at that block and its depth
* ``*.attn2.to_k.weight`` (columns)      -> context_dim
* ``proj_in.weight`` 2-D vs 4-D          -> linear vs 1x1-conv projection
* ``label_emb.0.0.weight`` (columns)     -> adm_in_channels (SDXL "vector" cond)
* ``label_emb.weight``                   -> num_classes (class-embedding UNets)

The attention head count is *not* visible in any shape (heads only split
the inner dimension), so it follows the family conventions of the original
configs, unless overridden:

* SD1.x (context 768, conv projection):         ``num_heads = 8``
* SD2.x (context 1024, linear projection):      ``num_head_channels = 64``
* SDXL  (adm_in_channels 2816, context 2048):   ``num_head_channels = 64``
* SDXL refiner (adm_in_channels 2560, context 1280): ``num_head_channels = 64``
* anything else ("custom"): conv projection -> ``num_heads = 8``;
  linear projection -> ``num_head_channels = 64`` (SDXL refiner, SD2 variants).

Overrides, highest priority first: explicit ``num_heads`` /
``num_head_channels`` arguments, then safetensors metadata (string values)
under ``<namespace>.num_head_channels`` or ``<namespace>.num_heads`` where
``namespace`` defaults to ``nodegraph.unet`` (ControlNets use
``nodegraph.controlnet``), and ``<namespace>.upcast_attention``
(``"true"``/``"false"``).  Our tiny demo/test checkpoints write these keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl-refiner", "custom")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of an LDM ``UNetModel`` (and of a ControlNet's encoder).

    ``transformer_depth`` is per resolution level (0 = no attention there);
    ``transformer_depth_output`` is per output block, because SDXL-style
    configs may give the decoder its own depths.  Exactly one of
    ``num_heads`` / ``num_head_channels`` is positive.
    """

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    transformer_depth: tuple[int, ...]
    transformer_depth_middle: int
    transformer_depth_output: tuple[int, ...]
    context_dim: int | None
    use_linear_in_transformer: bool
    num_heads: int = -1
    num_head_channels: int = -1
    adm_in_channels: int | None = None
    num_classes: int | None = None
    upcast_attention: bool = False
    family: str = "custom"

    def __post_init__(self) -> None:
        if (self.num_heads > 0) == (self.num_head_channels > 0):
            raise ValueError("exactly one of num_heads / num_head_channels must be positive")
        if len(self.num_res_blocks) != len(self.channel_mult) or len(self.transformer_depth) != len(
            self.channel_mult
        ):
            raise ValueError("num_res_blocks and transformer_depth need one entry per level")
        if len(self.transformer_depth_output) != sum(n + 1 for n in self.num_res_blocks):
            raise ValueError("transformer_depth_output needs one entry per output block")
        for level, depth in enumerate(self.transformer_depth):
            if depth:
                self.heads_for(self.model_channels * self.channel_mult[level])

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    @property
    def attention_levels(self) -> tuple[int, ...]:
        """Indices of the levels whose encoder blocks carry attention."""
        return tuple(i for i, d in enumerate(self.transformer_depth) if d > 0)

    def heads_for(self, channels: int) -> tuple[int, int]:
        """(heads, head_dim) for an attention block of ``channels`` width."""
        if self.num_head_channels > 0:
            if channels % self.num_head_channels:
                raise ValueError(
                    f"{channels} channels not divisible by num_head_channels={self.num_head_channels}"
                )
            return channels // self.num_head_channels, self.num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels not divisible by num_heads={self.num_heads}")
        return self.num_heads, channels // self.num_heads


def _indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _depth(keys: list[str], block: str) -> int:
    """Number of transformer blocks in ``block`` (e.g. ``input_blocks.1.1``)."""
    return len(_indices(keys, f"{block}.transformer_blocks."))


def _parse_bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    if value.strip().lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class _Encoder:
    model_channels: int
    in_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    transformer_depth: tuple[int, ...]
    transformer_depth_middle: int
    context_dim: int | None
    use_linear: bool


def _infer_encoder(sd: Mapping[str, Any], keys: list[str]) -> _Encoder:
    """The part of the config shared by the UNet and a ControlNet (encoder + middle)."""
    if "input_blocks.0.0.weight" not in sd:
        raise ValueError("not an LDM UNet state dict: 'input_blocks.0.0.weight' is missing")
    conv_in = sd["input_blocks.0.0.weight"]
    model_channels, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])

    levels: list[list[tuple[int, int]]] = [[]]  # per level: (width, depth) per ResBlock
    for i in _indices(keys, "input_blocks."):
        if i == 0:
            continue
        if f"input_blocks.{i}.0.op.weight" in sd:
            levels.append([])
        elif f"input_blocks.{i}.0.out_layers.3.weight" in sd:
            width = int(sd[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0])
            levels[-1].append((width, _depth(keys, f"input_blocks.{i}.1")))
        else:
            raise ValueError(f"input_blocks.{i} is neither a ResBlock nor a conv Downsample (unsupported)")

    channel_mult, num_res, depths = [], [], []
    for level, blocks in enumerate(levels):
        if not blocks or len(set(blocks)) != 1:
            raise ValueError(f"level {level}: ResBlocks {blocks} differ in width or attention depth")
        width, depth = blocks[0]
        if width % model_channels:
            raise ValueError(f"level {level}: width {width} is not a multiple of {model_channels}")
        channel_mult.append(width // model_channels)
        num_res.append(len(blocks))
        depths.append(depth)

    if "middle_block.1.proj_in.weight" not in sd or "middle_block.2.out_layers.3.weight" not in sd:
        raise ValueError("middle_block is not ResBlock-SpatialTransformer-ResBlock (unsupported)")
    proj_in = sd["middle_block.1.proj_in.weight"]
    to_k = next((sd[k] for k in keys if k.endswith(".attn2.to_k.weight")), None)
    return _Encoder(
        model_channels=model_channels,
        in_channels=in_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=tuple(num_res),
        transformer_depth=tuple(depths),
        transformer_depth_middle=_depth(keys, "middle_block.1"),
        context_dim=None if to_k is None else int(to_k.shape[1]),
        use_linear=len(proj_in.shape) == 2,
    )


def _family(enc: _Encoder, adm_in_channels: int | None) -> str:
    if adm_in_channels == 2816 and enc.context_dim == 2048:
        return "sdxl"
    if adm_in_channels == 2560 and enc.context_dim == 1280:  # pooled 1280 + 5 x 256 (sizes, crop, aesthetic)
        return "sdxl-refiner"
    if adm_in_channels is None and enc.context_dim == 768 and not enc.use_linear:
        return "sd1"
    if adm_in_channels is None and enc.context_dim == 1024 and enc.use_linear:
        return "sd2"
    return "custom"


def _heads(
    family: str,
    use_linear: bool,
    metadata: Mapping[str, str] | None,
    namespace: str,
    num_heads: int | None,
    num_head_channels: int | None,
) -> tuple[int, int]:
    if num_heads is not None or num_head_channels is not None:
        return (num_heads or -1, num_head_channels or -1)
    metadata = metadata or {}
    if f"{namespace}.num_head_channels" in metadata:
        return -1, int(metadata[f"{namespace}.num_head_channels"])
    if f"{namespace}.num_heads" in metadata:
        return int(metadata[f"{namespace}.num_heads"]), -1
    if family == "sd1" or (family == "custom" and not use_linear):
        return 8, -1
    return -1, 64


def _checked(namespace: str, family: str):
    """``UNetConfig`` constructor whose head errors say how to fix them."""

    def build(**fields: Any) -> UNetConfig:
        try:
            return UNetConfig(**fields)
        except ValueError as exc:
            if "divisible" not in str(exc):
                raise
            raise ValueError(
                f"{exc} ({family} model: the head count cannot be read from tensor shapes; pass "
                f"num_heads/num_head_channels or set safetensors metadata '{namespace}.num_heads' "
                f"or '{namespace}.num_head_channels')"
            ) from exc

    return build


def infer_unet_config(
    state_dict: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    *,
    num_heads: int | None = None,
    num_head_channels: int | None = None,
    namespace: str = "nodegraph.unet",
) -> UNetConfig:
    """Infer the config of an LDM UNet from a prefix-stripped state dict.

    ``state_dict`` values only need a ``.shape``.  Raises ``ValueError`` for
    layouts this UNet does not implement (e.g. ``resblock_updown``).
    """
    keys = list(state_dict.keys())
    enc = _infer_encoder(state_dict, keys)
    if "out.2.weight" not in state_dict:
        raise ValueError("not an LDM UNet state dict: 'out.2.weight' is missing")
    out_channels = int(state_dict["out.2.weight"].shape[0])
    adm = state_dict.get("label_emb.0.0.weight")
    adm_in_channels = None if adm is None else int(adm.shape[1])
    classes = state_dict.get("label_emb.weight")
    num_classes = None if classes is None else int(classes.shape[0])

    n_out = sum(n + 1 for n in enc.num_res_blocks)
    found = _indices(keys, "output_blocks.")
    if found != list(range(n_out)):
        raise ValueError(f"expected output_blocks 0..{n_out - 1} for this encoder, found {found}")
    depth_out = tuple(_depth(keys, f"output_blocks.{j}.1") for j in range(n_out))

    return _build_config(enc, out_channels=out_channels, depth_out=depth_out, adm_in_channels=adm_in_channels,
                         num_classes=num_classes, metadata=metadata, namespace=namespace, num_heads=num_heads,
                         num_head_channels=num_head_channels)


def infer_encoder_config(
    state_dict: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    *,
    num_heads: int | None = None,
    num_head_channels: int | None = None,
    namespace: str = "nodegraph.controlnet",
) -> UNetConfig:
    """Config for a module that only has the UNet's encoder half (a ControlNet).

    The decoder fields are filled with what the matching UNet would have
    (out_channels = in_channels, decoder depths mirroring the encoder) so the
    same ``UNetConfig`` type describes both.
    """
    keys = list(state_dict.keys())
    enc = _infer_encoder(state_dict, keys)
    adm = state_dict.get("label_emb.0.0.weight")
    adm_in_channels = None if adm is None else int(adm.shape[1])
    classes = state_dict.get("label_emb.weight")
    depth_out = tuple(
        d
        for level in reversed(range(len(enc.channel_mult)))
        for d in [enc.transformer_depth[level]] * (enc.num_res_blocks[level] + 1)
    )
    return _build_config(enc, out_channels=enc.in_channels, depth_out=depth_out, adm_in_channels=adm_in_channels,
                         num_classes=None if classes is None else int(classes.shape[0]), metadata=metadata,
                         namespace=namespace, num_heads=num_heads, num_head_channels=num_head_channels)


def _build_config(enc: _Encoder, *, out_channels: int, depth_out: tuple[int, ...], adm_in_channels: int | None,
                  num_classes: int | None, metadata: Mapping[str, str] | None, namespace: str,
                  num_heads: int | None, num_head_channels: int | None) -> UNetConfig:
    """The one place that turns inferred encoder facts + family/metadata head rules into a config
    (shared by full UNets and encoder-only ControlNets)."""
    family = _family(enc, adm_in_channels)
    heads, head_channels = _heads(family, enc.use_linear, metadata, namespace, num_heads, num_head_channels)
    upcast = False
    if metadata and f"{namespace}.upcast_attention" in metadata:
        upcast = _parse_bool(metadata[f"{namespace}.upcast_attention"])
    return _checked(namespace, family)(
        in_channels=enc.in_channels,
        out_channels=out_channels,
        model_channels=enc.model_channels,
        channel_mult=enc.channel_mult,
        num_res_blocks=enc.num_res_blocks,
        transformer_depth=enc.transformer_depth,
        transformer_depth_middle=enc.transformer_depth_middle,
        transformer_depth_output=depth_out,
        context_dim=enc.context_dim,
        use_linear_in_transformer=enc.use_linear,
        num_heads=heads,
        num_head_channels=head_channels,
        adm_in_channels=adm_in_channels,
        num_classes=num_classes,
        upcast_attention=upcast,
        family=family,
    )
