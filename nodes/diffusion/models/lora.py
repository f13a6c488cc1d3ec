"""Merge LoRA files into our UNet and CLIP text encoders without touching the cached base model.

A LoRA stores, per patched layer, a low-rank factorisation of a weight
update: ``down`` (rank x in), ``up`` (out x rank) and optionally ``alpha``;
the merged weight is ``W + (up @ down) * (alpha / rank) * strength``.  For
convolutions ``down`` is (rank, in, kh, kw) and ``up`` (out, rank, 1, 1), so
the product is taken on the flattened kernels and reshaped back; Tucker-style
conv LoRAs (LyCORIS ``lora_mid``, a (rank, rank, kh, kw) core between two
1x1 factors) are contracted with an einsum.

Why a *patched copy*: the base model sits in the engine's cache and other
runs use it concurrently, so it must never be mutated.  A deep copy of an
SDXL UNet would cost gigabytes, so :func:`patched_copy` copies only the
module objects on the path to each patched layer (a few hundred small Python
objects) and shares every other parameter with the base.  Merging happens in
float32 and the result is cast back to the weight's dtype, so an fp16 model
does not lose the (small) update to fp16 rounding of intermediate products.

Key naming is handled by :mod:`.lora_keys`; this module groups a file's
tensors per layer, computes the deltas, and reports the keys that matched
nothing (the node warns) or raises :class:`LoraError` when nothing matched
at all (a LoRA for another model family).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from .flux import FluxConfig
from .loading import CheckpointError, load_state_dict
from .lora_keys import LoraTarget, flux_key_map, sd3_key_map, text_encoder_key_map, unet_key_map, zimage_key_map
from .mmdit import MMDiTConfig
from .unet_config import UNetConfig
from .zimage import ZImageConfig

__all__ = [
    "LoraError",
    "LoraLayer",
    "ParsedLora",
    "LoraApplied",
    "parse_lora",
    "lora_delta",
    "patched_copy",
    "merge_lora",
    "apply_lora",
    "load_lora",
]


class LoraError(CheckpointError):
    """A LoRA file cannot be applied (nothing matched, or a layer's shapes do not fit)."""


@dataclass
class LoraLayer:
    """The factors of one patched layer, as stored (dtype/device untouched)."""

    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    mid: torch.Tensor | None = None
    alpha: float | None = None
    keys: list[str] = field(default_factory=list)  # source tensor keys, for reporting

    @property
    def rank(self) -> int:
        assert self.down is not None
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """``alpha / rank``; 1 when the file stores no alpha (peft/diffusers convention)."""
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass
class ParsedLora:
    """A LoRA file grouped per layer: ``layers[module name]``, plus keys of no known format."""

    layers: dict[str, LoraLayer]
    unknown: list[str]


# (suffix, field); module name = key without the suffix.  Longest suffixes first.
_SUFFIXES = (
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
)
# diffusers' old attention-processor format: "<attn>.processor.to_q_lora.down.weight".
_PROCESSOR = re.compile(r"(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")


def _split_key(key: str) -> tuple[str, str] | None:
    if m := _PROCESSOR.fullmatch(key):
        proj = m.group(2) + (".0" if m.group(2) == "to_out" else "")
        return f"{m.group(1)}.{proj}", m.group(3)
    for suffix, kind in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return None


def parse_lora(state_dict: Mapping[str, torch.Tensor]) -> ParsedLora:
    """Group a LoRA state dict per layer.

    Layers missing ``up`` or ``down`` and keys of formats not implemented
    here (LoHa ``hada_*``, LoKr ``lokr_*``, DoRA ``dora_scale``, bias or full
    ``diff`` patches) end up in ``unknown`` so the caller can report them.
    """
    layers: dict[str, LoraLayer] = {}
    unknown: list[str] = []
    dora: set[str] = set()
    for key in state_dict:
        split = _split_key(key)
        if split is None:
            if key.endswith(".dora_scale"):
                dora.add(key[: -len(".dora_scale")])
            unknown.append(key)
            continue
        name, kind = split
        layer = layers.setdefault(name, LoraLayer())
        layer.keys.append(key)
        if kind == "alpha":
            layer.alpha = float(state_dict[key].float().item())
        else:
            setattr(layer, kind, state_dict[key])
    # A DoRA layer merged as plain LoRA would silently be wrong, so it is not merged at all.
    for name in [n for n, layer in layers.items() if layer.up is None or layer.down is None or n in dora]:
        unknown.extend(layers.pop(name).keys)
    return ParsedLora(layers, sorted(unknown))


def lora_delta(
    layer: LoraLayer, weight_shape: torch.Size | Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """``(up @ down) * alpha / rank`` in float32, shaped like the target weight.

    A 1x1 conv and a linear layer hold the same map, so a factorisation made
    for one fits the other (SD1 uses conv ``proj_in``, SD2/SDXL linear).
    ``device``: where to compute (the weight's device; default: where the factors are).
    """
    assert layer.up is not None and layer.down is not None
    shape = tuple(weight_shape)
    up, down = layer.up.to(device, torch.float32), layer.down.to(device, torch.float32)
    if layer.mid is not None:
        # Tucker: delta[o, i, h, w] = sum_ab up[o, a] * mid[a, b, h, w] * down[b, i].
        delta = torch.einsum("oa,abhw,bi->oihw", up.flatten(1), layer.mid.to(device, torch.float32), down.flatten(1))
    else:
        if up.ndim == 4 and up.shape[2:] != (1, 1):
            raise LoraError(f"conv LoRA with a {tuple(up.shape[2:])} 'up' kernel is not supported")
        delta = up.flatten(1) @ down.flatten(1)  # (out, in * kh * kw)
    if delta.shape[0] != shape[0] or delta.numel() != math.prod(shape):
        raise LoraError(
            f"LoRA factors up {tuple(up.shape)} / down {tuple(down.shape)} do not fit a weight of shape {shape}"
        )
    return delta.reshape(shape) * layer.scale


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object sharing everything, with its own child/parameter tables."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    clone._parameters = dict(module._parameters)
    return clone


def patched_copy(model: nn.Module, new_weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """``model`` with the parameters named in ``new_weights`` replaced, sharing all others.

    Only the modules on the paths to the replaced parameters are copied
    (shallowly), so ``model`` and all its tensors stay untouched and the
    copy costs memory only for the new weights.
    """
    root = _shallow(model)
    clones: dict[str, nn.Module] = {"": root}
    for pname, tensor in new_weights.items():
        *path, leaf = pname.split(".")
        parent, prefix = root, ""
        for part in path:
            prefix = f"{prefix}.{part}" if prefix else part
            if prefix not in clones:
                child = parent._modules[part]
                if child is None:
                    raise KeyError(pname)
                clones[prefix] = _shallow(child)
                parent._modules[part] = clones[prefix]
            parent = clones[prefix]
        old = parent._parameters.get(leaf)
        if old is None:
            raise KeyError(pname)
        parent._parameters[leaf] = nn.Parameter(tensor, requires_grad=old.requires_grad)
    return root


def merge_lora(
    model: nn.Module, lora: ParsedLora, strength: float, *, key_map: Mapping[str, str | LoraTarget]
) -> tuple[nn.Module, set[str]]:
    """Merge every layer of ``lora`` that ``key_map`` resolves; returns ``(patched copy, used layer names)``.

    ``key_map``: LoRA layer name -> module path in ``model``, or a :class:`LoraTarget`
    (a row slice of a fused weight, see :mod:`.lora_keys`).  Several LoRA layers hitting one
    weight (or slices of it) add up.
    With ``strength == 0`` or no match the model itself is returned
    (unmodified, so sharing it is safe).
    """
    used: set[str] = set()
    sums: dict[str, torch.Tensor] = {}
    originals: dict[str, torch.Tensor] = {}
    on_the_fly: dict[str, list[Any]] = {}  # quantized layers: LoRA added at compute, never merged
    for name, layer in lora.layers.items():
        target = key_map.get(name)
        if target is None:
            continue
        used.add(name)
        if strength == 0:
            continue
        t = target if isinstance(target, LoraTarget) else LoraTarget(target)
        module = model.get_submodule(t.path)
        if hasattr(module, "qformat"):  # a GGUF/fp8 layer (quant.layers): merging would re-quantize
            from ..quant.layers import LoraPatch

            on_the_fly.setdefault(t.path, []).append(LoraPatch(layer, strength, t.start, t.stop, t.swap_halves))
            continue
        weight = module.weight
        pname = t.path + ".weight"
        stop = weight.shape[0] if t.stop is None else t.stop
        try:
            delta = lora_delta(layer, (stop - t.start, *weight.shape[1:]), weight.device)
        except LoraError as exc:
            raise LoraError(f"layer {name!r} -> {pname}[{t.start}:{stop}]: {exc}") from exc
        if t.swap_halves:
            delta = torch.cat(delta.chunk(2, dim=0)[::-1], dim=0)
        if pname not in sums:
            originals[pname] = weight
            sums[pname] = weight.detach().float().clone()
        sums[pname][t.start : stop] += delta * strength
    out = model
    if sums:
        out = patched_copy(model, {p: acc.to(originals[p].dtype) for p, acc in sums.items()})
    if on_the_fly:
        from ..quant.layers import with_lora

        out = with_lora(out, on_the_fly)  # raises LoraError when factors do not fit a layer
    return out, used


class LoraApplied(NamedTuple):
    """Result of :func:`apply_lora`: patched models and the LoRA keys that matched nothing."""

    unet: nn.Module | None
    clip: nn.Module | tuple[nn.Module, ...] | None
    unmatched: list[str]


_UNET_PREFIXES = (
    "lora_unet_", "unet.", "diffusion_model.", "model.diffusion_model.", "transformer.", "lora_transformer_",
)  # fmt: skip
_TE_PREFIXES = ("lora_te", "text_encoder")


def apply_lora(
    unet: nn.Module | None,
    clip: nn.Module | Sequence[nn.Module] | None,
    lora_sd: Mapping[str, torch.Tensor],
    strength_model: float,
    strength_clip: float,
    *,
    unet_config: UNetConfig | None = None,
    name: str = "LoRA",
) -> LoraApplied:
    """Apply one LoRA to a UNet and its text encoder(s), returning patched copies.

    ``unet``: our ``UNetModel`` (its ``.config`` gives the naming map unless
    ``unet_config`` is passed), ``FluxTransformer``, ``MMDiT`` or ``ZImageTransformer``.
    ``clip``: one ``ClipTextModel``
    (SD1/SD2) or a sequence ``(clip_l, clip_g)`` (SDXL) / ``(clip_l, t5)`` (FLUX;
    order = ``lora_te1_``/``lora_te2_`` and ``text_encoder.``/``text_encoder_2.``);
    the result has the same shape (a tuple for a sequence).  Either may be
    ``None`` (a model-only loader); keys aimed at an absent component are
    then ignored rather than reported.  ``name`` (usually the file path)
    appears in errors.

    ``unmatched`` lists tensor keys that addressed no layer of the given
    models or are of an unsupported LoRA kind.  Raises :class:`LoraError` if
    no layer matched at all, i.e. the LoRA is for another model family.
    """
    lora = parse_lora(lora_sd)
    used: set[str] = set()

    new_unet = unet
    if unet is not None:
        new_unet, hit = merge_lora(unet, lora, strength_model, key_map=_model_key_map(unet, unet_config))
        used |= hit

    new_clip: nn.Module | tuple[nn.Module, ...] | None = None
    if clip is not None:
        encoders = [clip] if isinstance(clip, nn.Module) else list(clip)
        patched = []
        for i, enc in enumerate(encoders):
            out, hit = merge_lora(enc, lora, strength_clip, key_map=text_encoder_key_map(enc, i, len(encoders)))
            patched.append(out)
            used |= hit
        new_clip = patched[0] if isinstance(clip, nn.Module) else tuple(patched)

    ignored = (() if unet is not None else _UNET_PREFIXES) + (() if clip is not None else _TE_PREFIXES)
    unmatched = list(lora.unknown)
    for layer_name, layer in lora.layers.items():
        if layer_name not in used and not layer_name.startswith(ignored):
            unmatched.extend(layer.keys)
    if not used:
        total = len(lora.layers)
        sample = ", ".join(sorted(lora.layers)[:5]) or ", ".join(lora.unknown[:5])
        raise LoraError(
            f"{name}: none of its {total} LoRA layers matched the given model "
            f"(a LoRA for another model family, or an unsupported format?); e.g. {sample}"
        )
    return LoraApplied(new_unet, new_clip, sorted(unmatched))


def _model_key_map(model: nn.Module, unet_config: UNetConfig | None) -> Mapping[str, str | LoraTarget]:
    """The LoRA naming table of a diffusion model: the split-file transformers (FLUX, SD3, Z-Image) by
    their config class, UNets by ``UNetConfig``."""
    cfg = unet_config or getattr(model, "config", None)
    for config_type, key_map in ((FluxConfig, flux_key_map), (MMDiTConfig, sd3_key_map),
                                 (ZImageConfig, zimage_key_map)):
        if isinstance(cfg, config_type):
            return key_map(model)
    if not isinstance(cfg, UNetConfig):
        raise TypeError("apply_lora needs the UNet's UNetConfig (unet.config or unet_config=) or a split-file "
                        "transformer (FLUX, SD3, Z-Image)")
    return unet_key_map(model, cfg)


def load_lora(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """Open a LoRA file (``.safetensors`` memory-mapped; pickles via weights-only ``torch.load``)."""
    sd, _ = load_state_dict(path)
    return sd
