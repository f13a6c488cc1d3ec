"""Split-file models: identify a file from its tensor names, and load diffusion models / text encoders.

Transformer families ship as separate files (``diffusion_models/``,
``text_encoders/``, ``vae/``).  Users mix them up, so every loader first
*identifies* the file from its safetensors header alone (no tensor is read):
that is cheap enough to run during validation, which lets a wrong file fail
with "clip_name2 is a CLIP-L text encoder, type flux needs a T5-XXL file here"
before any work and before anything is cached.

Family table: :data:`DIFFUSION_FAMILIES` says, per transformer family, how its
file is recognised, which rules (schedule, VAE scaling) apply and how the
network is built.  FLUX.1 is the first row; SD3.5, Z-Image, Qwen-Image and
FLUX.2 each add a row and a model file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Prefixes of the components of an all-in-one FLUX checkpoint (ComfyUI's saving layout).
FLUX_UNET_PREFIX = "model.diffusion_model."
FLUX_CLIP_L_PREFIXES = ("text_encoders.clip_l.transformer.", "text_encoders.clip_l.")
FLUX_T5_PREFIXES = ("text_encoders.t5xxl.transformer.", "text_encoders.t5xxl.")
FLUX_VAE_PREFIXES = ("vae.", "first_stage_model.")
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e5m2")


class WrongModelFile(ValueError):
    """A file that is not the kind of model the loader (or loader ``type``) needs; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message}; {fix}")
        self.message, self.fix = message, fix


@dataclass(frozen=True)
class FileIdentity:
    """What a model file holds, read from tensor names and shapes.

    ``kind``: ``flux`` (a FLUX transformer), ``flux_checkpoint`` (all-in-one FLUX),
    ``sd3`` / ``sd3_checkpoint``, ``zimage`` (a Z-Image DiT), ``sd_checkpoint``, ``sd_unet``,
    ``clip`` (HF CLIP text model), ``openclip``, ``t5``, ``qwen3`` (HF Qwen3 decoder: Z-Image's
    encoder), ``llm`` (another HF decoder-only LLM, named in messages only), ``vae``, ``lora``,
    ``controlnet``, ``unknown``.  ``info``: shape facts (``width``,
    ``latent_channels``, ``layout`` ...) used in messages and checks.
    """

    kind: str
    description: str
    info: Mapping[str, Any]


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, tuple[Any, list[int]]], dict[str, str]]:
    """``({key: (dtype, shape)}, metadata)`` of a ``.safetensors`` file, validated against its size
    (a truncated file fails here).  Pickled checkpoints cannot be inspected without loading: ``({}, {})``."""
    from .models.loading import CheckpointError, _read_safetensors_header

    p = Path(path)
    if p.suffix.lower() == ".gguf":
        return _gguf_header(p)
    if p.suffix.lower() not in (".safetensors", ".sft"):
        return {}, {}
    try:
        _, entries, meta = _read_safetensors_header(os.fspath(p))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p.name}: cannot read this safetensors file (truncated or corrupt?): {exc}") from exc
    return {k: (v[0], list(v[1])) for k, v in entries.items()}, dict(meta)


def _gguf_header(p: Path) -> tuple[dict[str, tuple[Any, list[int]]], dict[str, str]]:
    """A ``.gguf`` file's ``{key: (storage type, logical shape)}`` under checkpoint names (T5 files'
    llama.cpp names mapped back), read by ``gguf``'s reader from the header only (the data stays
    memory-mapped, unread); a truncated or foreign file fails here, at validation."""
    from .quant.gguf_file import read_gguf, text_encoder_state_dict

    ckpt = read_gguf(p)
    sd = text_encoder_state_dict(ckpt)
    meta = {"general.architecture": ckpt.architecture} if ckpt.architecture else {}
    return {k: (getattr(v, "type_name", v.dtype), list(v.shape)) for k, v in sd.items()}, meta


def open_model_file(path: str | os.PathLike[str]) -> tuple[Mapping[str, Any], dict[str, str]]:
    """``(state dict, metadata)`` of any model file: GGUF (quantized tensors, checkpoint names, a
    ``model.diffusion_model.`` prefix stripped, T5 names mapped) or what ``load_state_dict`` reads."""
    from .models.loading import load_state_dict

    p = Path(path)
    if p.suffix.lower() == ".gguf":
        from .quant.gguf_file import read_gguf, text_encoder_state_dict

        ckpt = read_gguf(p)
        return text_encoder_state_dict(ckpt), ({"general.architecture": ckpt.architecture}
                                               if ckpt.architecture else {})
    return load_state_dict(p)


def _has(keys: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _strip(keys: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}


def _identify_flux(keys: Mapping[str, Any]) -> FileIdentity | None:
    from .models.flux import detect_flux_layout

    layout = detect_flux_layout(keys)
    if layout is None:
        return None
    if layout == "bfl":
        width = keys["img_in.weight"][1][1]
        guidance = _has(keys, "guidance_in.")
    else:
        width = keys["x_embedder.weight"][1][1]
        guidance = _has(keys, "time_text_embed.guidance_embedder.")
    variant = "dev" if guidance else "schnell"
    extra = {64: "", 128: " canny/depth", 384: " fill"}.get(width, f" ({width // 4} input channels)")
    return FileIdentity("flux", f"a FLUX.1-{variant}{extra} diffusion model ({layout} layout)",
                        {"layout": layout, "guidance": guidance, "in_channels": width})


def _identify_mmdit(keys: Mapping[str, Any]) -> FileIdentity | None:
    from .models.mmdit import detect_mmdit_layout

    layout = detect_mmdit_layout(keys)
    if layout is None:
        return None
    qkv = "joint_blocks.0.x_block.attn.qkv.weight" if layout == "original" else "transformer_blocks.0.attn.to_q.weight"
    width = keys[qkv][1][1]
    qk_norm = any(k.endswith(("attn.ln_q.weight", "attn.norm_q.weight")) for k in keys)
    mmdit_x = any(".attn2." in k for k in keys)
    variant = "SD3.5-medium (MMDiT-X)" if mmdit_x else "SD3.5" if qk_norm else "SD3"
    return FileIdentity("sd3", f"an {variant} MMDiT diffusion model (width {width}, {layout} layout)",
                        {"layout": layout, "width": width})


def _identify_zimage(keys: Mapping[str, Any]) -> FileIdentity | None:
    from .models.zimage import detect_zimage_layout

    layout = detect_zimage_layout(keys)
    if layout is None:
        return None
    width = keys["x_embedder.weight" if layout == "comfy" else "all_x_embedder.2-1.weight"][1][0]
    text = keys["cap_embedder.0.weight"][1][0]
    return FileIdentity("zimage", f"a Z-Image diffusion model (width {width}, {layout} layout)",
                        {"layout": layout, "width": width, "text_width": text})


def _identify_llm(keys: Mapping[str, Any]) -> FileIdentity | None:
    """Decoder-only LLM text encoders in Hugging Face naming: Qwen3 (per-head q/k norms: Z-Image's
    Qwen3-4B) is one we build; others (Qwen2.5-VL of Qwen-Image, Llama ...) are named in messages only."""
    from .models.qwen3 import is_qwen3_state_dict

    bare = {k.removeprefix("model."): v for k, v in keys.items()}
    if "embed_tokens.weight" not in bare or "layers.0.self_attn.q_proj.weight" not in bare:
        return None
    vocab, width = bare["embed_tokens.weight"][1]
    layers = 1 + max(int(k.split(".")[1]) for k in bare if k.startswith("layers."))
    if is_qwen3_state_dict({f"model.{k}" for k in bare}):
        name = "Qwen3-4B" if (width, layers) == (2560, 36) else "Qwen3"
        return FileIdentity("qwen3", f"a {name} text encoder (width {width}, {layers} layers)",
                            {"width": width, "layers": layers, "vocab": vocab})
    name = "Qwen2.5" if "layers.0.self_attn.q_proj.bias" in bare else "LLaMA-style"
    return FileIdentity("llm", f"a {name} language-model text encoder (width {width}, {layers} layers; not "
                        "Qwen3)", {"width": width, "layers": layers})


def _identify_text_encoder(keys: Mapping[str, Any]) -> FileIdentity | None:
    if "encoder.block.0.layer.0.SelfAttention.q.weight" in keys:
        embedding = next((keys[k][1] for k in ("shared.weight", "encoder.embed_tokens.weight") if k in keys), None)
        vocab, width = embedding if embedding is not None else (None, None)
        name = "T5-XXL" if width == 4096 else "T5"
        # vocab: embedding rows, which decide whether the shipped T5 tokenizer fits (models.t5.shipped_t5_fits)
        return FileIdentity("t5", f"a {name} text encoder (width {width})", {"width": width, "vocab": vocab})
    for prefix in ("text_model.", ""):
        key = prefix + "embeddings.token_embedding.weight"
        if key in keys and _has(keys, prefix + "encoder.layers."):
            width = keys[key][1][1]
            name = {768: "CLIP-L", 1280: "CLIP-G (bigG)", 1024: "CLIP-H"}.get(width, "CLIP")
            return FileIdentity("clip", f"a {name} text encoder (width {width})", {"width": width})
    if "token_embedding.weight" in keys and _has(keys, "transformer.resblocks."):
        width = keys["token_embedding.weight"][1][1]
        return FileIdentity("openclip", f"an OpenCLIP text encoder (width {width}, SD2/SDXL-G layout)",
                            {"width": width})
    return None


def _identify_other(keys: Mapping[str, Any]) -> FileIdentity:
    if any(".lora_" in k or "lora_down" in k or ".lora_A" in k for k in keys):
        return FileIdentity("lora", "a LoRA", {})
    if _has(keys, "input_hint_block.") or _has(keys, "controlnet_cond_embedding."):
        return FileIdentity("controlnet", "a ControlNet", {})
    if "decoder.conv_in.weight" in keys or "encoder.conv_in.weight" in keys:
        channels = keys["decoder.conv_in.weight"][1][1] if "decoder.conv_in.weight" in keys else None
        return FileIdentity("vae", f"a VAE ({channels}-channel latents)", {"latent_channels": channels})
    if "input_blocks.0.0.weight" in keys:
        return FileIdentity("sd_unet", "a Stable Diffusion UNet without text encoder and VAE", {})
    return FileIdentity("unknown", "not a model this loader recognises", {})


def identify_keys(keys: Mapping[str, Any]) -> FileIdentity:
    """Identify a state dict from its ``{key: (dtype, shape)}`` (a header) or ``{key: tensor}``."""
    keys = {k: (v.dtype, list(v.shape)) if hasattr(v, "shape") else v for k, v in keys.items()}
    if _has(keys, FLUX_UNET_PREFIX):
        inner = _strip(keys, FLUX_UNET_PREFIX)
        flux = _identify_flux(inner)
        if flux is not None:
            whole = any(_has(keys, p) for p in (*FLUX_T5_PREFIXES, *FLUX_CLIP_L_PREFIXES))
            if whole:
                return FileIdentity("flux_checkpoint", "an all-in-one FLUX checkpoint (" + flux.description[2:] + ")",
                                    flux.info)
            return flux
        mmdit = _identify_mmdit(inner)
        if mmdit is not None:
            if any(_has(keys, q) for q in ("text_encoders.", *FLUX_VAE_PREFIXES)):
                return FileIdentity("sd3_checkpoint", "an all-in-one SD3 checkpoint (" + mmdit.description[3:] + ")",
                                    mmdit.info)
            return mmdit
        zimage = _identify_zimage(inner)
        if zimage is not None:
            return zimage
        if "input_blocks.0.0.weight" in inner:
            return FileIdentity("sd_checkpoint", "a Stable Diffusion checkpoint (UNet, text encoder and VAE in "
                                "one file)", {})
    for find in (_identify_flux, _identify_mmdit, _identify_zimage, _identify_text_encoder, _identify_llm):
        found = find(keys)
        if found is not None:
            return found
    return _identify_other(keys)


_IDENTITY_CACHE: dict[tuple[str, int, int], FileIdentity] = {}
_IDENTITY_CACHE_SIZE = 512


def identify_file(path: str | os.PathLike[str]) -> FileIdentity | None:
    """Identity of a safetensors file from its header (cached per path, size and mtime);
    ``None`` for pickled files, which cannot be inspected without loading them."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _IDENTITY_CACHE:
        header, _ = read_header(p)
        if not header:
            return None
        if len(_IDENTITY_CACHE) >= _IDENTITY_CACHE_SIZE:  # files come and go in a long-lived server
            _IDENTITY_CACHE.pop(next(iter(_IDENTITY_CACHE)))
        _IDENTITY_CACHE[key] = identify_keys(header)
    return _IDENTITY_CACHE[key]


# --------------------------------------------------------------------------------------------
# What each loader accepts
# --------------------------------------------------------------------------------------------

_FIX_BY_KIND = {
    "sd_checkpoint": "move it to models/checkpoints/ and load it with Load Checkpoint",
    "flux_checkpoint": "load it with Load Checkpoint (it holds the text encoders and VAE too), or pick the "
                       "diffusion-model-only file",
    "sd_unet": "put it in models/diffusion_models/ (or unet/) and load it with Load Diffusion Model",
    "clip": "put it in models/text_encoders/ and load it with Load CLIP / DualCLIPLoader",
    "openclip": "put it in models/text_encoders/ and load it with Load CLIP",
    "t5": "put it in models/text_encoders/ and load it with DualCLIPLoader (type flux) or TripleCLIPLoader (SD3)",
    "sd3": "put it in models/diffusion_models/ and load it with Load Diffusion Model",
    "sd3_checkpoint": "load it with Load Checkpoint (it holds the VAE and maybe the text encoders too), or pick "
                      "the diffusion-model-only file",
    "vae": "put it in models/vae/ and load it with Load VAE",
    "lora": "put it in models/loras/ and load it with Load LoRA",
    "controlnet": "put it in models/controlnet/ and load it with Load ControlNet",
    "flux": "put it in models/diffusion_models/ and load it with Load Diffusion Model",
    "zimage": "put it in models/diffusion_models/ and load it with Load Diffusion Model",
    "qwen3": "put it in models/text_encoders/ and load it with Load CLIP (type lumina2)",
    "llm": "nodegraph builds only Qwen3 language-model encoders (Z-Image's qwen_3_4b.safetensors)",
}


def fix_for(identity: FileIdentity) -> str:
    return _FIX_BY_KIND.get(identity.kind, "check that the file is a complete model of the right kind")


def check_diffusion_model(identity: FileIdentity | None, name: str) -> None:
    """Raise :class:`WrongModelFile` unless ``identity`` is a diffusion model the loader can build."""
    if identity is None or identity.kind in DIFFUSION_KINDS:
        return
    raise WrongModelFile(f"{name!r} is {identity.description}, not a diffusion model (FLUX, SD3, Z-Image, SD UNet)",
                         fix_for(identity))


#: File kinds Load Diffusion Model builds, and the family each belongs to.
DIFFUSION_KINDS = {"flux": "flux", "flux_checkpoint": "flux", "sd3": "sd3", "sd3_checkpoint": "sd3",
                   "zimage": "zimage", "sd_unet": "unet"}
#: File kinds that are text encoders (any loader's slot takes one of these, or says which it needed).
TEXT_ENCODER_KINDS = ("clip", "openclip", "t5", "qwen3", "llm")


def check_text_encoder(identity: FileIdentity | None, name: str, wanted: str, clip_type: str) -> None:
    """Raise :class:`WrongModelFile` unless the file is the text encoder ``wanted`` ("clip"/"t5"/"any")."""
    if identity is None:
        return
    if identity.kind not in TEXT_ENCODER_KINDS:
        raise WrongModelFile(f"{name!r} is {identity.description}, not a text encoder", fix_for(identity))
    if wanted == "qwen3" or identity.kind in ("qwen3", "llm"):
        _check_qwen3_slot(identity, name, wanted, clip_type)
        return
    if wanted == "any" or identity.kind == wanted or (wanted == "clip" and identity.kind == "openclip"):
        return
    need = {"clip": "a CLIP text encoder (CLIP-L for FLUX)", "t5": "a T5-XXL text encoder"}[wanted]
    if clip_type == "flux":
        label, example = {"clip": ("CLIP-L", "clip_l"), "t5": ("T5-XXL", "t5xxl_fp16")}[wanted]
        fix = f"FLUX needs one CLIP-L and one T5-XXL file: pick the {label} file (e.g. {example}.safetensors) here"
    else:
        fix = "load T5 files with DualCLIPLoader (type flux)" if identity.kind == "t5" else "pick a CLIP file"
    raise WrongModelFile(f"{name!r} is {identity.description}, but type {clip_type!r} needs {need} here", fix)


def _check_qwen3_slot(identity: FileIdentity, name: str, wanted: str, clip_type: str) -> None:
    """Z-Image's slot takes exactly a Qwen3; a Qwen3 anywhere else is named as Z-Image's encoder."""
    if wanted == "qwen3":
        if identity.kind == "qwen3":
            return
        raise WrongModelFile(f"{name!r} is {identity.description}, but type {clip_type!r} (Z-Image) needs the "
                             "Qwen3-4B text encoder here",
                             "pick Z-Image's text encoder (qwen_3_4b.safetensors) in clip_name")
    if identity.kind == "qwen3":
        raise WrongModelFile(f"{name!r} is {identity.description} (Z-Image's encoder), but type {clip_type!r} "
                             "needs a CLIP or T5 file here", "load it with Load CLIP, type lumina2 (Z-Image)")
    raise WrongModelFile(f"{name!r} is {identity.description}, which nodegraph does not build", fix_for(identity))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


FP8_WEIGHT_DTYPES = {"fp8_e4m3fn": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


def fp8_dtype(weight_dtype: str) -> Any:
    """The torch dtype of a ``weight_dtype`` choice (None for "default": keep the file's storage)."""
    import torch

    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight_dtype {weight_dtype!r}; choose from {WEIGHT_DTYPES}")
    return getattr(torch, FP8_WEIGHT_DTYPES[weight_dtype]) if weight_dtype != "default" else None


def build_flux_model(sd: Mapping[str, Any], *, device: Any, weight_dtype: str = "default", home: Any = None,
                     metadata: Mapping[str, str] | None = None, name: str = "diffusion model") -> Any:
    """A :class:`~.flux_runtime.FluxModel` from a prefix-stripped FLUX state dict (BFL or diffusers).

    Weights keep the file's dtype (memory-mapped, no copy) unless ``weight_dtype`` asks for fp8,
    in which case the matrices are stored in fp8 and upcast one layer at a time at compute.
    """
    import torch

    from .families import model_sampling_for, rules_for
    from .flux_runtime import FluxModel
    from .models.flux import (
        FluxTransformer,
        convert_diffusers_flux_to_bfl,
        detect_flux_layout,
        flux_config_from_state_dict,
    )

    if detect_flux_layout(sd.keys()) == "diffusers":
        sd = convert_diffusers_flux_to_bfl(sd)
    config = flux_config_from_state_dict(sd)
    model, dtype = _assign_stored(FluxTransformer, config, sd, weight_dtype, name=name, device=device, home=home)
    rules = rules_for("flux-dev" if config.guidance_embed else "flux-schnell", metadata)
    return FluxModel(model, model_sampling_for(rules), rules, torch.device(device), dtype)


def _assign_stored(cls: Any, config: Any, sd: Mapping[str, Any], weight_dtype: str, *, name: str,
                   device: Any, home: Any = None) -> tuple[Any, Any]:
    """``(model, compute dtype)``: a network built on meta with the file's tensors assigned through the
    one storage path (``quant.layers.assign_stored``): float files as stored (memory-mapped, cast per
    layer at compute); GGUF, fp8 and scaled-fp8 files, or a ``weight_dtype`` of fp8, with every
    Linear/Conv weight kept in storage dtype and expanded per layer.  Shared by every split-file family."""
    from .models.loading import build_on_meta, dtype_for
    from .quant.layers import assign_stored

    fp8 = fp8_dtype(weight_dtype)
    dtype = dtype_for(device, sd)
    model = build_on_meta(cls, config)
    assign_stored(model, sd, name=name, device=home or device, dtype=dtype if fp8 is not None or _quantized(sd)
                  else None, weight_dtype=fp8)
    return model, dtype


def _quantized(sd: Mapping[str, Any]) -> bool:
    from .quant.layers import needs_quantized_load

    return needs_quantized_load(sd)


def build_unet_model(sd: Mapping[str, Any], *, device: Any, weight_dtype: str = "default", home: Any = None,
                     metadata: Mapping[str, str] | None = None, name: str = "diffusion model") -> Any:
    """A :class:`~.runtime.DiffusionModel` from a standalone SD1/SD2/SDXL UNet state dict (ComfyUI's
    ``unet/`` files, GGUF conversions of them); architecture from shapes, storage as for the transformers."""
    import torch

    from .families import model_sampling_for, rules_for
    from .models.loading import build_on_meta, dtype_for
    from .models.unet import UNetModel
    from .models.unet_config import infer_unet_config
    from .quant.layers import assign_stored
    from .runtime import DiffusionModel

    config = infer_unet_config(sd, metadata)
    dtype = dtype_for(device, sd)  # our UNet computes in its float weights' dtype
    unet = build_on_meta(UNetModel, config)
    assign_stored(unet, sd, name=name, device=home or device, dtype=dtype, weight_dtype=fp8_dtype(weight_dtype))
    rules = rules_for(config.family, metadata)
    return DiffusionModel(unet, model_sampling_for(rules), rules, torch.device(device), dtype)


def build_sd3_model(sd: Mapping[str, Any], *, device: Any, weight_dtype: str = "default", home: Any = None,
                    metadata: Mapping[str, str] | None = None, name: str = "diffusion model") -> Any:
    """A :class:`~.sd3_runtime.SD3Model` from a prefix-stripped MMDiT state dict (original or diffusers
    layout); architecture from shapes, storage as in :func:`build_flux_model`."""
    import torch

    from .families import model_sampling_for, rules_for
    from .models.mmdit import (
        MMDiT,
        convert_diffusers_mmdit_to_original,
        detect_mmdit_layout,
        mmdit_config_from_state_dict,
    )
    from .sd3_runtime import SD3Model

    if detect_mmdit_layout(sd.keys()) == "diffusers":
        sd = convert_diffusers_mmdit_to_original(sd)
    config = mmdit_config_from_state_dict(sd)
    model, dtype = _assign_stored(MMDiT, config, sd, weight_dtype, name=name, device=device, home=home)
    rules = rules_for("sd3", metadata)
    return SD3Model(model, model_sampling_for(rules), rules, torch.device(device), dtype)


def build_zimage_model(sd: Mapping[str, Any], *, device: Any, weight_dtype: str = "default", home: Any = None,
                       metadata: Mapping[str, str] | None = None, name: str = "diffusion model") -> Any:
    """A :class:`~.zimage_runtime.ZImageModel` from a prefix-stripped Z-Image state dict (ComfyUI or
    diffusers layout); architecture from shapes, storage as in :func:`build_flux_model`.  The unused
    ``norm_final.weight`` some single files carry is dropped."""
    import torch

    from .families import model_sampling_for, rules_for
    from .models.zimage import (
        ZImageTransformer,
        convert_diffusers_zimage_to_comfy,
        detect_zimage_layout,
        zimage_config_from_state_dict,
    )
    from .zimage_runtime import ZImageModel

    if detect_zimage_layout(sd.keys()) == "diffusers":
        sd = convert_diffusers_zimage_to_comfy(sd)
    sd = {k: v for k, v in sd.items() if k != "norm_final.weight"}
    config = zimage_config_from_state_dict(sd)
    model, dtype = _assign_stored(ZImageTransformer, config, sd, weight_dtype, name=name, device=device, home=home)
    rules = rules_for("zimage", metadata)
    return ZImageModel(model, model_sampling_for(rules), rules, torch.device(device), dtype)


_BUILDERS = {"sd3": build_sd3_model, "zimage": build_zimage_model, "unet": build_unet_model}


def load_diffusion_model_file(path: str | os.PathLike[str], *, device: Any = "cpu",
                              weight_dtype: str = "default", home: Any = None) -> Any:
    """Load a diffusion-model-only file (``diffusion_models/``); all-in-one FLUX files work too.
    ``home``: where the weights are put when not on ``device`` (RAM, for the device-memory manager
    to move them to a GPU under its budget); the model computes on ``device``."""
    from .models.loading import strip_prefix

    p = Path(path)
    check_diffusion_model(identify_file(p), p.name)
    sd, metadata = open_model_file(p)
    if any(k.startswith(FLUX_UNET_PREFIX) for k in sd):
        sd = strip_prefix(sd, FLUX_UNET_PREFIX)
    identity = identify_keys(sd)
    check_diffusion_model(identity, p.name)
    build = _BUILDERS.get(DIFFUSION_KINDS.get(identity.kind, ""), build_flux_model)
    return build(sd, device=device, weight_dtype=weight_dtype, metadata=metadata, name=p.name, home=home)


@dataclass(frozen=True)
class TextEncoderPart:
    """One loaded text-encoder file: its kind (clip/t5) and the built module with its tokenizer."""

    kind: str
    module: Any
    tokenizer: Any
    dtype: Any = None  # compute dtype, for encoders that take it per call (Qwen3)
    #: T5 only: pad prompts to at least this many tokens (None = FLUX's 256).  From the file's
    #: ``nodegraph.t5.min_tokens`` metadata: a small encoder trained on short padding (our demo) says so.
    min_tokens: int | None = None


def load_text_encoder_part(path: str | os.PathLike[str], *, device: Any = "cpu",
                           sd: Mapping[str, Any] | None = None,
                           metadata: Mapping[str, str] | None = None, home: Any = None) -> TextEncoderPart:
    """Build the CLIP or T5 text encoder a file (or an already-split ``sd``) holds, with its tokenizer.
    T5 keeps the stored dtype and computes in float32 on CPU; CLIP follows the checkpoint policy."""
    import torch

    from .checkpoint import build_clip, tokenizer_for
    from .models.clip_text import openclip_to_hf
    from .models.loading import compute_dtype, stored_dtype
    from .models.t5 import T5Tokenizer, build_t5_from_state_dict

    p = Path(path)
    if sd is None:
        sd, metadata = open_model_file(p)
    identity = identify_keys(sd)
    dtype = compute_dtype(device, stored_dtype(sd))
    if identity.kind == "t5":
        model = build_t5_from_state_dict(sd).to(home or device)
        model.compute_dtype = dtype
        min_tokens = (metadata or {}).get("nodegraph.t5.min_tokens")
        return TextEncoderPart("t5", model, T5Tokenizer.beside(p, model.config.vocab_size),
                               min_tokens=int(min_tokens) if min_tokens else None)
    if identity.kind == "qwen3":
        from .models.qwen3 import build_qwen3_from_state_dict

        model = build_qwen3_from_state_dict(sd).to(home or device)
        return TextEncoderPart("qwen3", model, qwen3_tokenizer_beside(p, model.config.vocab_size), dtype)
    if identity.kind in ("clip", "openclip"):
        hf = openclip_to_hf(sd) if identity.kind == "openclip" else sd
        # HF-layout files are OpenAI CLIP-L (quick GELU) except bigG (width 1280: SDXL/SD3's clip_g, GELU)
        # (a file's nodegraph.clip.activation metadata wins: our demo CLIP uses GELU)
        activation = "quick_gelu" if identity.kind == "clip" and identity.info.get("width") != 1280 else "gelu"
        activation = (metadata or {}).get("nodegraph.clip.activation") or activation
        model = build_clip(hf, activation=activation, device=torch.device(home or device), dtype=dtype, name=p.name)
        return TextEncoderPart("clip", model, tokenizer_for(metadata or {}, model.config.vocab_size))
    raise WrongModelFile(f"{p.name!r} is {identity.description}, not a text encoder", fix_for(identity))


#: Where a Qwen3 encoder's tokenizer.json may sit, relative to the encoder file (``stem`` = its name).
QWEN3_TOKENIZER_CANDIDATES = ("{stem}.tokenizer.json", "tokenizer.json", "qwen3_tokenizer/tokenizer.json")


class MissingTokenizer(WrongModelFile):
    """A text encoder file whose tokenizer.json is not beside it."""


def qwen3_tokenizer_path(encoder: str | os.PathLike[str], vocab_rows: int | None = None) -> Path | None:
    """The tokenizer.json beside a Qwen3 encoder file; None when there is none but the encoder's embedding
    (``vocab_rows`` rows) fits the Qwen2/Qwen3 vocabulary built into nodegraph
    (:func:`~.models.qwen3.shipped_qwen_fits`); else :class:`MissingTokenizer` naming where it may go."""
    from .models.qwen3 import QWEN_VOCAB_ROWS, shipped_qwen_fits

    p = Path(encoder)
    tried = [p.parent / c.format(stem=p.stem) for c in QWEN3_TOKENIZER_CANDIDATES]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    if shipped_qwen_fits(vocab_rows):
        return None
    why = "" if vocab_rows is None else (f" (its {vocab_rows}-token vocabulary is not Qwen3's {QWEN_VOCAB_ROWS}, "
                                         "the one built into nodegraph)")
    raise MissingTokenizer(f"no Qwen3 tokenizer for {p.name!r}{why}",
                           f"put the model's tokenizer.json (from the Qwen3-4B / Z-Image release's tokenizer "
                           f"folder) beside it as {tried[0].name} or tokenizer.json")


def qwen3_tokenizer_beside(encoder: str | os.PathLike[str], vocab_rows: int | None = None) -> Any:
    """The Qwen3 tokenizer of an encoder file: the tokenizer.json beside it, else the built-in Qwen2/Qwen3
    one when the vocabulary fits (see :func:`qwen3_tokenizer_path`)."""
    from .models.qwen3 import Qwen3Tokenizer, shipped_qwen_tokenizer

    path = qwen3_tokenizer_path(encoder, vocab_rows)
    return Qwen3Tokenizer(shipped_qwen_tokenizer() if path is None else path)


def zimage_text_encoder(part: TextEncoderPart, device: Any) -> Any:
    """A :class:`~.zimage_runtime.ZImageTextEncoder` from a loaded Qwen3 part."""
    import torch

    from .families import FAMILIES
    from .zimage_runtime import ZImageTextEncoder

    return ZImageTextEncoder(part.module, part.tokenizer, FAMILIES["zimage"], torch.device(device),
                             part.dtype or torch.float32)


def flux_text_encoder(parts: list[TextEncoderPart], device: Any) -> Any:
    """A :class:`~.flux_runtime.FluxTextEncoder` from loaded CLIP-L and/or T5 parts."""
    import torch

    from .families import FAMILIES
    from .flux_runtime import T5_MIN_TOKENS, FluxTextEncoder

    clip = next((q for q in parts if q.kind == "clip"), None)
    t5 = next((q for q in parts if q.kind == "t5"), None)
    return FluxTextEncoder(clip.module if clip else None, t5.module if t5 else None,
                           clip.tokenizer if clip else None, t5.tokenizer if t5 else None,
                           FAMILIES["flux-dev"], torch.device(device),
                           t5_min_tokens=(t5.min_tokens if t5 and t5.min_tokens else T5_MIN_TOKENS))


def sd3_text_encoder(parts: list[TextEncoderPart | None], device: Any) -> Any:
    """A :class:`~.sd3_runtime.SD3TextEncoder` from (CLIP-L, CLIP-G, T5) parts; None = absent (zeros)."""
    import torch

    from .families import FAMILIES
    from .sd3_runtime import SD3_T5_MIN_TOKENS, SD3TextEncoder

    clip_l, clip_g, t5 = parts
    tok = next((q.tokenizer for q in (clip_l, clip_g) if q is not None), None)
    # A T5 file that says how many tokens it was trained with (nodegraph.t5.min_tokens) is padded to that,
    # as for FLUX; released T5-XXL files say nothing and get SD3's 77.
    return SD3TextEncoder(clip_l.module if clip_l else None, clip_g.module if clip_g else None,
                          t5.module if t5 else None, tok, t5.tokenizer if t5 else None, FAMILIES["sd3"],
                          torch.device(device),
                          t5_min_tokens=(t5.min_tokens if t5 and t5.min_tokens else SD3_T5_MIN_TOKENS))


def sd3_slot_of(part: TextEncoderPart) -> str:
    """Which of SD3's slots a loaded encoder fills: T5, bigG (width 1280) or CLIP-L (any other CLIP)."""
    if part.kind == "t5":
        return "t5"
    return "clip_g" if part.module.config.width == 1280 else "clip_l"


def sd3_pair_slots(kinds_widths: list[tuple[str, int | None]]) -> list[str] | None:
    """SD3 slots of two text encoders given as (kind, width) (DualCLIPLoader type sd3, either order):
    two CLIPs are CLIP-L (narrower) and CLIP-G (wider); a CLIP beside T5 is CLIP-G at width 1280, else
    CLIP-L.  None when both are the same kind (two T5s, two CLIPs of one width)."""
    (k1, w1), (k2, w2) = kinds_widths
    if k1 == k2 == "t5" or (k1 != "t5" and k2 != "t5" and w1 == w2):
        return None
    if k1 != "t5" and k2 != "t5":
        return ["clip_l", "clip_g"] if (w1 or 0) < (w2 or 0) else ["clip_g", "clip_l"]
    return ["t5" if k == "t5" else "clip_g" if w == 1280 else "clip_l" for k, w in kinds_widths]


def sd3_slot_problem(identity: FileIdentity | None, slot: str, name: str) -> None:
    """Raise :class:`WrongModelFile` unless ``identity`` fits the TripleCLIPLoader ``slot`` (clip_l/clip_g/t5)."""
    if identity is None:
        return
    if identity.kind not in TEXT_ENCODER_KINDS:
        raise WrongModelFile(f"{name!r} is {identity.description}, not a text encoder", fix_for(identity))
    width = identity.info.get("width")
    kind = "t5" if identity.kind == "t5" else "clip_g" if width == 1280 else "clip_l" if width == 768 else None
    if identity.kind in ("qwen3", "llm"):
        kind = identity.kind
    elif kind is None and identity.kind != "t5":
        kind = slot if slot != "t5" else "clip_l"  # a CLIP of unusual width (tests, custom): trust the slot
    if kind == slot:
        return
    label = {"clip_l": "CLIP-L (clip_l.safetensors)", "clip_g": "CLIP-G (clip_g.safetensors)",
             "t5": "T5-XXL (t5xxl_fp16.safetensors)"}
    raise WrongModelFile(f"{name!r} is {identity.description}, but SD3's {slot} slot needs {label[slot]}",
                         f"pick the {label[slot]} file here; TripleCLIPLoader takes clip_l, clip_g, t5 in that order")


#: Text-encoder ``type`` choices and the parts each expects (one entry per file input).
CLIP_TYPES: dict[str, tuple[str, ...]] = {"stable_diffusion": ("clip",), "flux": ("clip", "t5"),
                                          "sd3": ("clip", "t5"), "lumina2": ("qwen3",)}
DUAL_CLIP_TYPES: dict[str, tuple[str, ...]] = {"flux": ("clip", "t5")}


def pair_problem(kinds: list[str | None], clip_type: str) -> tuple[int, str] | None:
    """``(index of the wrong file, kind needed there)`` when two identified text encoders do not form
    the pair ``clip_type`` needs (order does not matter); None when they do or cannot be told yet."""
    wanted = sorted(DUAL_CLIP_TYPES[clip_type])
    kinds = ["clip" if k == "openclip" else k for k in kinds]
    if None in kinds or sorted(kinds) == wanted:  # type: ignore[type-var]
        return None
    needed = next(w for w in wanted if w not in kinds)
    return 1, needed


def load_flux_checkpoint(path: str | os.PathLike[str], sd: Mapping[str, Any], metadata: Mapping[str, str],
                         device: Any) -> tuple[Any, Any, Any, Any]:
    """(model, clip, vae, rules) of an all-in-one FLUX file (ComfyUI's layout: ``model.diffusion_model.``,
    ``text_encoders.clip_l.``/``t5xxl.``, ``vae.`` or ``first_stage_model.``); missing parts are None."""
    from .checkpoint import load_vae_state_dict
    from .models.loading import strip_prefix

    p = Path(path)
    model = build_flux_model(strip_prefix(sd, FLUX_UNET_PREFIX), device=device, metadata=metadata, name=p.name)
    parts = []
    for prefixes in (FLUX_CLIP_L_PREFIXES, FLUX_T5_PREFIXES):
        prefix = next((q for q in prefixes if any(k.startswith(q) for k in sd)), None)
        if prefix is not None:
            parts.append(load_text_encoder_part(p, device=device, sd=strip_prefix(sd, prefix), metadata=metadata))
    clip = flux_text_encoder(parts, device) if parts else None
    vae_prefix = next((q for q in FLUX_VAE_PREFIXES if any(k.startswith(q) for k in sd)), None)
    vae = load_vae_state_dict(strip_prefix(sd, vae_prefix), model.rules, model.device) if vae_prefix else None
    return model, clip, vae, model.rules


#: Prefixes of the text encoders of an all-in-one SD3 checkpoint (ComfyUI's saving layout), in slot order.
SD3_TEXT_PREFIXES = (("text_encoders.clip_l.transformer.", "text_encoders.clip_l."),
                     ("text_encoders.clip_g.transformer.", "text_encoders.clip_g."),
                     ("text_encoders.t5xxl.transformer.", "text_encoders.t5xxl."))


def load_sd3_checkpoint(path: str | os.PathLike[str], sd: Mapping[str, Any], metadata: Mapping[str, str],
                        device: Any) -> tuple[Any, Any, Any, Any]:
    """(model, clip, vae, rules) of an all-in-one SD3/SD3.5 file (``model.diffusion_model.``,
    ``text_encoders.clip_l./clip_g./t5xxl.``, ``first_stage_model.``); a file without text encoders gives
    clip None, one without some of them a CLIP whose missing parts are zeros (as TripleCLIPLoader)."""
    from .checkpoint import load_vae_state_dict
    from .models.loading import strip_prefix

    p = Path(path)
    model = build_sd3_model(strip_prefix(sd, FLUX_UNET_PREFIX), device=device, metadata=metadata, name=p.name)
    parts: list[TextEncoderPart | None] = []
    for prefixes in SD3_TEXT_PREFIXES:
        prefix = next((q for q in prefixes if any(k.startswith(q) for k in sd)), None)
        parts.append(None if prefix is None else
                     load_text_encoder_part(p, device=device, sd=strip_prefix(sd, prefix), metadata=metadata))
    clip = sd3_text_encoder(parts, device) if any(parts) else None
    vae_prefix = next((q for q in FLUX_VAE_PREFIXES if any(k.startswith(q) for k in sd)), None)
    vae = load_vae_state_dict(strip_prefix(sd, vae_prefix), model.rules, model.device) if vae_prefix else None
    return model, clip, vae, model.rules

