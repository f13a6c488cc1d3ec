"""Load single-file checkpoints (original SD layout) into MODEL / CLIP / VAE objects.

``load_checkpoint`` reads the file lazily (safetensors are memory-mapped),
splits it by prefix, infers each component's architecture from tensor shapes,
applies family rules and metadata for what shapes cannot say, and builds each
module on the meta device before adopting the file's tensors — no random init,
no second copy.  Errors name the file and list missing/unexpected keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .families import FamilyRules, model_sampling_for, rules_for
from .models.clip_text import ClipTextModel, clean_hf_clip_state_dict, infer_clip_config, openclip_to_hf
from .models.controlnet import ControlNet
from .models.loading import (
    CheckpointError,
    assign_weights,
    build_on_meta,
    collector_paused,
    dtype_for,
    has_prefix,
    load_state_dict,
    strip_prefix,
)
from .models.unet import UNetModel
from .models.unet_config import infer_unet_config
from .models.vae import AutoencoderKL, infer_vae_config
from .runtime import DiffusionModel, TextEncoder, VAEModel
from .text.tokenizer import DEFAULT_VOCAB_PATH, ClipTokenizer, default_tokenizer

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."
SDXL_REFINER_CLIP_G = "conditioner.embedders.0.model."  # the refiner has bigG only, as embedder 0


@dataclass(frozen=True)
class Checkpoint:
    model: DiffusionModel
    clip: TextEncoder | None
    vae: VAEModel | None
    rules: FamilyRules


def _ctx(path: os.PathLike[str] | str, what: str, exc: Exception) -> Exception:
    """``exc`` with the file and part named; an error that carries its own ``fix`` (a bad precision
    setting, not the file's fault) passes through as it is, so the user sees that fix."""
    if getattr(exc, "fix", None):
        return type(exc)(*exc.args)  # a fresh one: callers raise it ``from exc``, which must not be itself
    return CheckpointError(f"{Path(path).name}: cannot load the {what}: {exc}")


def tokenizer_for(metadata: Mapping[str, str], vocab_size: int) -> ClipTokenizer:
    """The tokenizer matching a text encoder: the standard CLIP vocabulary, or its
    first N merges for pruned-vocabulary models (N from metadata or from the
    embedding table's size: 512 byte tokens + N merges + 2 specials)."""
    n = metadata.get("nodegraph.tokenizer.max_merges")
    merges = int(n) if n else vocab_size - 514
    if merges >= 48894 or merges <= 0:
        return default_tokenizer()
    tok = ClipTokenizer.from_file(DEFAULT_VOCAB_PATH, max_merges=merges)
    if tok.vocab_size != vocab_size:
        raise CheckpointError(f"text encoder has {vocab_size} tokens but a {merges}-merge CLIP vocabulary "
                              f"has {tok.vocab_size}; set nodegraph.tokenizer.max_merges in the file's metadata")
    return tok


def build_clip(sd: Mapping[str, torch.Tensor], *, activation: str, device: torch.device, dtype: torch.dtype,
               heads: int | None = None, name: str = "text encoder") -> ClipTextModel:
    sd = clean_hf_clip_state_dict(sd)
    config = infer_clip_config(sd, activation, heads)  # type: ignore[arg-type]
    model = build_on_meta(ClipTextModel, config)
    from .quant.layers import assign_stored

    return assign_stored(model, sd, name=name, device=device, dtype=dtype)


def load_checkpoint(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                    prediction: str = "auto", dtype: torch.dtype | None = None,
                    home: torch.device | str | None = None) -> Checkpoint:
    """Load an all-in-one checkpoint.  ``prediction`` ("auto", "eps", "v") overrides the
    family rule / metadata for the rare file that gets it wrong.  ``dtype`` overrides the
    device policy (``compute_dtype``: fp32 on CPU or bf16 for a large UNet on a CPU with native bf16; the
    stored precision on GPUs), e.g. to keep fp16 weights
    memory-mapped instead of converting them.  ``home``: where the UNet and text encoders are
    put when it is not ``device`` (RAM, so the device-memory manager moves them to the GPU under
    its budget, as for split files); they still compute on ``device``."""
    with collector_paused():
        return _load_checkpoint(path, device=device, prediction=prediction, dtype=dtype, home=home)


def _load_checkpoint(path: str | os.PathLike[str], *, device: torch.device | str, prediction: str,
                     dtype: torch.dtype | None, home: torch.device | str | None) -> Checkpoint:
    device = torch.device(device) if not isinstance(device, torch.device) else device
    where = torch.device(home) if home is not None else device  # the weights' home
    sd, metadata = load_state_dict(path)
    family = _transformer_family(sd)
    if family is not None:
        from .split_files import load_flux_checkpoint, load_sd3_checkpoint

        load = load_sd3_checkpoint if family == "sd3" else load_flux_checkpoint
        try:
            return Checkpoint(*load(path, sd, metadata, device))
        except CheckpointError:
            raise
        except Exception as exc:
            raise _ctx(path, f"{family.upper()} model", exc) from exc
    if not has_prefix(sd, UNET):
        from .split_files import fix_for, identify_keys

        identity = identify_keys(sd)
        if identity.kind != "unknown":
            raise CheckpointError(f"{Path(path).name} is {identity.description}, not a full checkpoint: "
                                  f"{fix_for(identity)}")
        raise CheckpointError(f"{Path(path).name}: no UNet weights ('{UNET}*' keys); this is not a "
                              "full checkpoint — load it with the VAE/LoRA/ControlNet loader instead")
    unet_sd = strip_prefix(sd, UNET)
    dtype = dtype or dtype_for(device, unet_sd)  # the UNet's size decides the checkpoint's CPU precision
    try:
        config = infer_unet_config(unet_sd, metadata)
        unet = UNetModel.from_state_dict(unet_sd, metadata, device=where, dtype=dtype, config=config)
    except Exception as exc:
        raise _ctx(path, "UNet", exc) from exc
    rules = rules_for(config.family, metadata, prediction)
    schedule = model_sampling_for(rules)
    model = DiffusionModel(unet, schedule, rules, device, dtype)

    vae = None
    if has_prefix(sd, VAE):
        try:
            vae = load_vae_state_dict(strip_prefix(sd, VAE), rules, device, dtype)
        except Exception as exc:
            raise _ctx(path, "VAE", exc) from exc

    clip = None
    heads = metadata.get("nodegraph.clip.heads")
    head_count = int(heads) if heads else None
    try:
        if has_prefix(sd, SDXL_CLIP_L) and has_prefix(sd, SDXL_CLIP_G):
            clip_l = build_clip(strip_prefix(sd, SDXL_CLIP_L), activation="quick_gelu", device=where,
                                dtype=dtype, name="CLIP-L text encoder")
            clip_g = build_clip(openclip_to_hf(strip_prefix(sd, SDXL_CLIP_G)), activation="gelu", device=where,
                                dtype=dtype, name="CLIP-G text encoder")
            clip = TextEncoder((clip_l, clip_g), default_tokenizer(), rules, device)
        elif has_prefix(sd, SDXL_REFINER_CLIP_G):
            clip_g = build_clip(openclip_to_hf(strip_prefix(sd, SDXL_REFINER_CLIP_G)), activation="gelu",
                                device=where, dtype=dtype, name="CLIP-G text encoder")
            clip = TextEncoder((clip_g,), default_tokenizer(), rules, device)
        elif has_prefix(sd, SD2_CLIP):
            enc = build_clip(openclip_to_hf(strip_prefix(sd, SD2_CLIP)), activation=rules.clip_activation,
                             device=where, dtype=dtype, heads=head_count)
            clip = TextEncoder((enc,), tokenizer_for(metadata, enc.config.vocab_size), rules, device)
        elif has_prefix(sd, SD1_CLIP):
            enc = build_clip(strip_prefix(sd, SD1_CLIP), activation=rules.clip_activation, device=where,
                             dtype=dtype, heads=head_count)
            clip = TextEncoder((enc,), tokenizer_for(metadata, enc.config.vocab_size), rules, device)
    except Exception as exc:
        raise _ctx(path, "text encoder", exc) from exc
    return Checkpoint(model, clip, vae, rules)


def _transformer_family(sd: Mapping[str, torch.Tensor]) -> str | None:
    """"flux" / "sd3" for an all-in-one transformer file (``model.diffusion_model.double_blocks...`` /
    ``...joint_blocks...``), from key names only; None for UNet checkpoints."""
    from .models.flux import detect_flux_layout
    from .models.mmdit import detect_mmdit_layout

    if not has_prefix(sd, UNET):
        return None
    inner = [k[len(UNET):] for k in sd if k.startswith(UNET)]
    if detect_flux_layout(inner) is not None:
        return "flux"
    return "sd3" if detect_mmdit_layout(inner) is not None else None


def vae_family(sd: Mapping[str, torch.Tensor], file_name: str) -> str:
    """Family whose latent scaling a standalone VAE gets.  16-channel VAEs without quant convs are
    SD3's or FLUX's, which have the same layout: SD3's if the file name says so (``sd3``), else FLUX's
    (and :func:`vae_scaling_guessed` says VAE Decode should follow the sampling model's family).
    SDXL's if the file name says so, else SD's (metadata still wins over all of this)."""
    if _is_16_channel_ae(sd):
        return "sd3" if "sd3" in file_name.lower() else "flux-dev"
    return "sdxl" if "xl" in file_name.lower() else "sd1"


def _is_16_channel_ae(sd: Mapping[str, torch.Tensor]) -> bool:
    return "post_quant_conv.weight" not in sd and "encoder.conv_out.weight" in sd \
        and sd["encoder.conv_out.weight"].shape[0] == 32


def vae_scaling_guessed(sd: Mapping[str, torch.Tensor], file_name: str, metadata: Mapping[str, str]) -> bool:
    """True when neither metadata nor the file name tells SD3's from FLUX's VAE scaling."""
    lower = file_name.lower()
    named = "sd3" in lower or "flux" in lower
    return _is_16_channel_ae(sd) and not named and "nodegraph.vae.scaling_factor" not in metadata


def load_vae_state_dict(sd: Mapping[str, torch.Tensor], rules: FamilyRules, device: torch.device,
                        dtype: torch.dtype | None = None) -> VAEModel:
    dtype = dtype or dtype_for(device, sd)
    config = infer_vae_config(sd, rules.vae_scaling_factor, rules.vae_shift_factor)
    vae = build_on_meta(AutoencoderKL, config)
    assign_weights(vae, sd, name="VAE", device=device, dtype=dtype)
    return VAEModel(vae, device, dtype)


def load_vae_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> VAEModel:
    """A standalone VAE file (bare keys, or a full checkpoint's ``first_stage_model.*``).
    Scaling: metadata, else by :func:`vae_family`."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    sd, metadata = load_state_dict(path)
    if has_prefix(sd, VAE):
        sd = strip_prefix(sd, VAE)
    family = vae_family(sd, Path(path).name)
    try:
        vae = load_vae_state_dict(sd, rules_for(family, metadata), device)
        return replace(vae, scaling_guessed=vae_scaling_guessed(sd, Path(path).name, metadata))
    except Exception as exc:
        raise _ctx(path, "VAE", exc) from exc


def load_controlnet_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> ControlNet:
    """Single-file ControlNet (original layout, bare or ``control_model.*``) or a diffusers folder."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    p = Path(path)
    try:
        if p.is_dir():
            return ControlNet.from_diffusers_folder(p, device=device)
        sd, metadata = load_state_dict(p)
        return ControlNet.from_state_dict(sd, metadata, device=device)
    except CheckpointError:
        raise
    except Exception as exc:
        raise _ctx(path, "ControlNet", exc) from exc


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What makes a cached model stale: the file's identity, size and modification time."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
