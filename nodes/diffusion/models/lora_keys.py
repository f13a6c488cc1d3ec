"""Which model module a LoRA key addresses, for every naming LoRA trainers use.

A LoRA file names the *module* it patches, and the trainers disagree on how:

* kohya/sd-scripts: ``lora_unet_`` + module path with ``.`` replaced by ``_``.
  SD1/SD2 LoRAs use diffusers module paths (``down_blocks_0_attentions_0_
  proj_in``), SDXL LoRAs use the LDM paths (``input_blocks_4_1_proj_in``).
  Text encoders: ``lora_te_`` (single encoder), ``lora_te1_`` / ``lora_te2_``
  (SDXL's CLIP-L / bigG), each followed by the Hugging Face CLIP path.
* diffusers / peft: dotted diffusers paths under ``unet.`` and
  ``text_encoder.`` / ``text_encoder_2.``.
* LDM dotted paths under ``diffusion_model.`` / ``model.diffusion_model.``.

FLUX transformers (:func:`flux_key_map`) are addressed by BFL paths
(``diffusion_model.double_blocks.0.img_attn.qkv``, kohya
``lora_unet_double_blocks_0_img_attn_qkv``) or by diffusers paths
(``transformer.transformer_blocks.0.attn.to_q``, OneTrainer
``lora_transformer_...``, bare diffusers paths).  Our FLUX modules have BFL's
fused q/k/v (and q/k/v/MLP in single blocks), so a diffusers-named LoRA layer
patches a *row slice* of a fused weight: such entries are :class:`LoraTarget`
values instead of plain module paths.  SD3's MMDiT (:func:`sd3_key_map`, Stability
paths ``joint_blocks.N...`` or diffusers ``transformer_blocks.N.attn.to_q``) and
Z-Image (:func:`zimage_key_map`, ComfyUI paths ``layers.N.attention.qkv`` or
diffusers ``layers.N.attention.to_q``) work the same way.

Our modules carry LDM names (UNet) and Hugging Face names (CLIP), so the
lookup table is built by enumerating the model's own Linear/Conv2d modules
and emitting every alias of each.  The diffusers alias of an LDM path is
derived from the :class:`UNetConfig` (levels, ResBlocks per level, which
blocks carry attention), not from a fixed SD1 table, so SD2, SDXL and
non-standard configs (including our tiny test models) map correctly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from torch import nn

from .unet_config import UNetConfig

__all__ = [
    "PATCHABLE",
    "unet_block_map",
    "ldm_to_diffusers_unet",
    "unet_key_map",
    "text_encoder_key_map",
    "LoraTarget",
    "flux_key_map",
    "sd3_key_map",
    "zimage_key_map",
]

#: Module types whose ``weight`` a LoRA can patch (GEGLU's projection is a plain Linear).
PATCHABLE = (nn.Linear, nn.Conv2d)

# ResBlock parts: LDM name -> diffusers name.  Attention submodules keep their names.
_RESNET_RENAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
# Top-level modules: LDM name -> diffusers name.
_TOP_RENAMES = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}


def unet_block_map(cfg: UNetConfig) -> dict[str, tuple[str, str]]:
    """LDM block path -> (diffusers block path, kind) with kind in ``resnet|attention|sampler``.

    Input side: level ``i`` owns ``num_res_blocks[i]`` blocks ``[ResBlock,
    SpatialTransformer?]`` then (except the last level) a Downsample block;
    block ``k`` counts from 1 (0 is the stem conv).  Output side: levels in
    reverse, ``num_res_blocks + 1`` blocks each, the last block of every level
    but the top one ending with an Upsample at index 1 (no attention) or 2.
    """
    out: dict[str, tuple[str, str]] = {}
    levels = len(cfg.channel_mult)
    k = 1
    for i in range(levels):
        for j in range(cfg.num_res_blocks[i]):
            out[f"input_blocks.{k}.0"] = (f"down_blocks.{i}.resnets.{j}", "resnet")
            if cfg.transformer_depth[i]:
                out[f"input_blocks.{k}.1"] = (f"down_blocks.{i}.attentions.{j}", "attention")
            k += 1
        if i != levels - 1:
            out[f"input_blocks.{k}.0.op"] = (f"down_blocks.{i}.downsamplers.0.conv", "sampler")
            k += 1
    out["middle_block.0"] = ("mid_block.resnets.0", "resnet")
    out["middle_block.1"] = ("mid_block.attentions.0", "attention")
    out["middle_block.2"] = ("mid_block.resnets.1", "resnet")
    k = 0
    for up, level in enumerate(reversed(range(levels))):
        n = cfg.num_res_blocks[level] + 1
        for j in range(n):
            has_attn = cfg.transformer_depth_output[k] > 0
            out[f"output_blocks.{k}.0"] = (f"up_blocks.{up}.resnets.{j}", "resnet")
            if has_attn:
                out[f"output_blocks.{k}.1"] = (f"up_blocks.{up}.attentions.{j}", "attention")
            if level and j == n - 1:
                out[f"output_blocks.{k}.{2 if has_attn else 1}.conv"] = (
                    f"up_blocks.{up}.upsamplers.0.conv",
                    "sampler",
                )
            k += 1
    return out


def ldm_to_diffusers_unet(cfg: UNetConfig, ldm_names: Iterable[str]) -> dict[str, str]:
    """Map LDM module (or parameter) paths to their diffusers ``UNet2DConditionModel`` paths.

    Paths with no diffusers counterpart (e.g. a class ``label_emb``) are left out.
    """
    blocks = unet_block_map(cfg)
    result: dict[str, str] = {}
    for name in ldm_names:
        mapped = _to_diffusers(name, blocks)
        if mapped is not None:
            result[name] = mapped
    return result


def _to_diffusers(name: str, blocks: dict[str, tuple[str, str]]) -> str | None:
    for ldm, diff in _TOP_RENAMES.items():
        if name == ldm or name.startswith(ldm + "."):
            return diff + name[len(ldm) :]
    parts = name.split(".")
    # Block paths are 3 components ("input_blocks.4.1") or 4 for samplers ("input_blocks.3.0.op").
    for n in (4, 3, 2):
        head = ".".join(parts[:n])
        if head not in blocks:
            continue
        diff, kind = blocks[head]
        rest = ".".join(parts[n:])
        if kind == "resnet" and rest:
            for ldm, new in _RESNET_RENAMES.items():
                if rest == ldm or rest.startswith(ldm + "."):
                    rest = new + rest[len(ldm) :]
                    break
            else:
                return None
        return f"{diff}.{rest}" if rest else diff
    return None


def _patchable(model: nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if isinstance(mod, PATCHABLE)]


def _add(table: dict[str, str], alias: str, target: str) -> None:
    # First writer wins; the "_"-joined forms of distinct paths never collide in
    # SD models, and if they did the LDM spelling (added first) is the safer bet.
    table.setdefault(alias, target)


def unet_key_map(model: nn.Module, cfg: UNetConfig) -> dict[str, str]:
    """LoRA module name (every supported spelling) -> our UNet module path."""
    names = _patchable(model)
    diffusers = ldm_to_diffusers_unet(cfg, names)
    table: dict[str, str] = {}
    for name in names:
        _add(table, "lora_unet_" + name.replace(".", "_"), name)
        for prefix in ("diffusion_model.", "model.diffusion_model."):
            _add(table, prefix + name, name)
    for name, diff in diffusers.items():
        _add(table, "lora_unet_" + diff.replace(".", "_"), name)
        _add(table, "unet." + diff, name)
    return table


def text_encoder_key_map(model: nn.Module, index: int, count: int) -> dict[str, str]:
    """LoRA module name -> module path in text encoder ``index`` of ``count``.

    One encoder (SD1/SD2): ``lora_te_`` / ``text_encoder.``.  Two (SDXL):
    encoder 0 answers to ``lora_te1_`` / ``text_encoder.``, encoder 1 to
    ``lora_te2_`` / ``text_encoder_2.``.
    """
    if count == 1:
        kohya, dotted = ["lora_te_"], ["text_encoder."]
    else:
        kohya = [f"lora_te{index + 1}_"]
        dotted = ["text_encoder." if index == 0 else f"text_encoder_{index + 1}."]
    table: dict[str, str] = {}
    for name in _patchable(model):
        for prefix in kohya:
            _add(table, prefix + name.replace(".", "_"), name)
        for prefix in dotted:
            _add(table, prefix + name, name)
    return table


class LoraTarget(NamedTuple):
    """Where a LoRA layer lands when it is not a whole module weight.

    The delta covers output rows ``start:stop`` of ``path``'s weight (``stop=None``: to the
    end).  ``swap_halves``: the delta's two row halves are exchanged first (diffusers'
    ``norm_out.linear`` stores FLUX's final modulation as (scale, shift), BFL as (shift, scale)).
    """

    path: str
    start: int = 0
    stop: int | None = None
    swap_halves: bool = False


# BFL module (block-relative) -> diffusers module, whole-weight renames only.
_FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
}
_FLUX_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
_FLUX_TOP = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}


def _flux_diffusers_targets(model: nn.Module) -> dict[str, str | LoraTarget]:
    """diffusers module path -> our module path or fused-weight slice, for the model's actual blocks."""
    cfg = model.config  # type: ignore[attr-defined]
    h, mlp = cfg.hidden_size, cfg.mlp_hidden
    out: dict[str, str | LoraTarget] = {}
    for bfl, diff in _FLUX_TOP.items():
        if not bfl.startswith("guidance_in") or cfg.guidance_embed:
            out[diff] = bfl
    out["norm_out.linear"] = LoraTarget("final_layer.adaLN_modulation.1", swap_halves=True)
    for i in range(cfg.depth):
        src, dst = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for bfl, diff in _FLUX_DOUBLE.items():
            out[src + diff] = dst + bfl
        for j, name in enumerate(("to_q", "to_k", "to_v")):
            out[f"{src}attn.{name}"] = LoraTarget(dst + "img_attn.qkv", j * h, (j + 1) * h)
        for j, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
            out[f"{src}attn.{name}"] = LoraTarget(dst + "txt_attn.qkv", j * h, (j + 1) * h)
    for i in range(cfg.depth_single_blocks):
        src, dst = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for bfl, diff in _FLUX_SINGLE.items():
            out[src + diff] = dst + bfl
        for j, name in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
            out[src + name] = LoraTarget(dst + "linear1", j * h, (j + 1) * h)
        out[src + "proj_mlp"] = LoraTarget(dst + "linear1", 3 * h, 3 * h + mlp)
    return out


def flux_key_map(model: nn.Module) -> dict[str, str | LoraTarget]:
    """LoRA module name (every supported spelling) -> our FLUX module path or :class:`LoraTarget`.

    ``model`` is a ``FluxTransformer`` (its ``config`` gives widths and block counts).
    """
    table: dict[str, str | LoraTarget] = {}
    for name in _patchable(model):
        for alias in ("diffusion_model." + name, "model.diffusion_model." + name, "transformer." + name,
                      "lora_unet_" + name.replace(".", "_")):  # fmt: skip
            table.setdefault(alias, name)
    for diff, target in _flux_diffusers_targets(model).items():
        flat = diff.replace(".", "_")
        for alias in ("transformer." + diff, diff, "lora_transformer_" + flat, "lora_unet_" + flat, "lycoris_" + flat):
            table.setdefault(alias, target)
    return table


def _transformer_table(
    model: nn.Module, diffusers: dict[str, str | LoraTarget], native_prefixes: tuple[str, ...]
) -> dict[str, str | LoraTarget]:
    """Every spelling of a split-file transformer's LoRA layers: our (= the checkpoint's) module paths
    under ``native_prefixes`` and kohya's ``lora_unet_`` + path with ``_``; diffusers module paths
    (``diffusers``: path -> our module or fused-weight slice) bare, under ``transformer.`` (diffusers /
    peft), ``diffusion_model.`` (ComfyUI, ai-toolkit), ``base_model.model.`` (raw peft), and flattened
    under ``lora_transformer_`` (OneTrainer, SimpleTuner), ``lora_unet_`` and ``lycoris_``.  Native
    spellings win where both namings produce the same alias."""
    table: dict[str, str | LoraTarget] = {}
    for name in _patchable(model):
        for prefix in native_prefixes:
            table.setdefault(prefix + name, name)
        table.setdefault("lora_unet_" + name.replace(".", "_"), name)
    for diff, target in diffusers.items():
        flat = diff.replace(".", "_")
        for alias in ("transformer." + diff, "diffusion_model." + diff, "base_model.model." + diff, diff,
                      "lora_transformer_" + flat, "lora_unet_" + flat, "lycoris_" + flat):  # fmt: skip
            table.setdefault(alias, target)
    return table


def _sd3_diffusers_targets(model: nn.Module) -> dict[str, str | LoraTarget]:
    """diffusers ``SD3Transformer2DModel`` module path -> our MMDiT module path or fused-weight slice."""
    from .mmdit import _BLOCK, _FUSED, _TOP

    cfg = model.config  # type: ignore[attr-defined]
    h = cfg.hidden_size
    modules = dict(model.named_modules())
    out: dict[str, str | LoraTarget] = {diff: ours for diff, ours in _TOP.items() if ours in modules}
    out["norm_out.linear"] = LoraTarget("final_layer.adaLN_modulation.1", swap_halves=True)
    for i in range(cfg.depth):
        src, dst = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        pre_only = modules[dst + "context_block"].pre_only  # type: ignore[union-attr]
        for diff, ours in _BLOCK.items():
            if not diff.endswith(".weight") and dst + ours in modules:
                swap = pre_only and diff == "norm1_context.linear"  # diffusers: (scale, shift) here
                out[src + diff] = LoraTarget(dst + ours, swap_halves=True) if swap else dst + ours
        for ours, parts in _FUSED.items():
            if dst + ours in modules:
                for j, diff in enumerate(parts):
                    out[src + diff] = LoraTarget(dst + ours, j * h, (j + 1) * h)
    return out


def sd3_key_map(model: nn.Module) -> dict[str, str | LoraTarget]:
    """LoRA module name (every supported spelling) -> our SD3 MMDiT module path or :class:`LoraTarget`.

    Stability's module paths (``joint_blocks.0.x_block.attn.qkv``: kohya sd-scripts' SD3 LoRAs as
    ``lora_unet_joint_blocks_0_x_block_attn_qkv``, ComfyUI's as ``diffusion_model.``...) address our
    modules directly; diffusers paths (``transformer.transformer_blocks.0.attn.to_q``) address row
    slices of the fused q/k/v, and the final (and last text) modulation with its halves swapped.
    """
    return _transformer_table(model, _sd3_diffusers_targets(model),
                              ("diffusion_model.", "model.diffusion_model.", "transformer."))


def _zimage_diffusers_targets(model: nn.Module) -> dict[str, str | LoraTarget]:
    """diffusers ``ZImageTransformer2DModel`` module path -> our Z-Image module path or q/k/v slice."""
    from .zimage import _QKV, _RENAMES

    dim = model.config.dim  # type: ignore[attr-defined]
    out: dict[str, str | LoraTarget] = {}
    for name in _patchable(model):
        if name.endswith(".attention.qkv"):
            for j, part in enumerate(_QKV):
                out[name.replace(".attention.qkv", part.rstrip("."))] = LoraTarget(name, j * dim, (j + 1) * dim)
            continue
        diff = name + "."
        for old, new in _RENAMES:  # diffusers -> ComfyUI renames, applied backwards
            diff = diff.replace(new, old)
        out[diff[:-1]] = name
    return out


def zimage_key_map(model: nn.Module) -> dict[str, str | LoraTarget]:
    """LoRA module name (every supported spelling) -> our Z-Image module path or :class:`LoraTarget`.

    ComfyUI's paths (``layers.0.attention.qkv``, ``diffusion_model.`` or kohya ``lora_unet_``) address
    our modules directly; diffusers' (``transformer.layers.0.attention.to_q``, also under
    ``diffusion_model.`` as ai-toolkit and DiffSynth write them) address row slices of the fused q/k/v.
    """
    return _transformer_table(model, _zimage_diffusers_targets(model), ("diffusion_model.", "model.diffusion_model."))
