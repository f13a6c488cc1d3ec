"""Split-file loaders and the FLUX-specific nodes (ComfyUI's meaning, so workflows carry over).

Loaders: Load Diffusion Model (UNETLoader, with fp8 storage), Load CLIP
(CLIPLoader), DualCLIPLoader.  Each identifies its file(s) from the
safetensors header in its fingerprint hook, which the engine runs during
validation: a T5 file where CLIP-L belongs, a full SD checkpoint in
``diffusion_models/`` or a truncated file fails before any node runs, with
the input named, what the file is and the fix -- so nothing half-loaded is
ever cached.

FLUX nodes: Empty SD3 Latent Image (16 channels), FluxGuidance,
ModelSamplingFlux, Basic Guider (no negative pass), Conditioning Zero Out,
CLIP Text Encode (FLUX).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, Float, In, Int, Out, String, node

from .. import split_files  # torch-free at import: its tables are the choice lists
from ..paths import choices_for
from . import estimates as est
from .common import MAX_RESOLUTION, cpu_threads, load_error, model_file_fingerprint, resolve_model
from .custom_sampling import CFGGuide
from .device_memory import home_device

# The choices are the loaders' own tables (a clip type the loader knows is one row there); a dual
# "sd3" load takes two of SD3's three encoders and is checked by _check_dual_sd3 instead.
CLIP_TYPES = list(split_files.CLIP_TYPES)
DUAL_CLIP_TYPES = [*split_files.DUAL_CLIP_TYPES, "sd3"]
WEIGHT_DTYPES = list(split_files.WEIGHT_DTYPES)


def _identity(settings: Mapping[str, Any], kind: str, name: str, input_name: str) -> tuple[Path, Any]:
    """(path, identity from the header) of a model file, or a NodeInputError on ``input_name``."""
    from ..split_files import identify_file

    path = resolve_model(settings, kind, name, input_name)
    try:
        return path, identify_file(path)
    except Exception as exc:  # unreadable/truncated header
        raise NodeInputError(input_name, str(exc), "re-download or re-copy the file; it is incomplete") from None


def _checked_fingerprint(kind: str, inputs: Sequence[str],
                         check: Callable[[Mapping[str, Any], list[Any], list[str]], None]):  # noqa: ANN202
    """Fingerprint hook: the files' identities are checked (``check`` raises NodeInputError), then
    their size/mtime fingerprints returned.  Runs at validation, before any work."""
    prints = [model_file_fingerprint(kind, name) for name in inputs]

    def fingerprint(values: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
        present = [i for i in inputs if values.get(i) not in (None, "")]  # optional inputs may be left empty
        found = [_identity(settings, kind, str(values[i]), i) if i in present else (None, None) for i in inputs]
        identities = [identity for _, identity in found]
        check(values, identities, [str(values.get(i) or "") for i in inputs])
        for input_name, (path, identity) in zip(inputs, found, strict=True):
            if identity is not None and identity.kind == "t5":
                _need_t5_tokenizer(path, input_name, identity.info.get("vocab"))
            if identity is not None and identity.kind == "qwen3":
                _need_qwen3_tokenizer(path, input_name, identity.info.get("vocab"))
        return {i: fp(values, settings) for i, fp in zip(inputs, prints, strict=True) if i in present}

    return fingerprint


def _need_t5_tokenizer(path: Path, input_name: str, vocab_rows: int | None = None) -> None:
    """A T5 encoder needs its vocabulary: a tokenizer.json beside it, or (T5 v1.1 / T5-XXL vocabulary,
    ``vocab_rows`` from the header) the built-in one.  Say so at validation."""
    from ..models.t5 import T5Tokenizer, T5TokenizerError

    try:
        T5Tokenizer.beside(path, vocab_rows)
    except T5TokenizerError as exc:
        raise NodeInputError(input_name, f"no T5 tokenizer for {path.name!r}",
                             f"{exc} (the tokenizer.json from a T5/FLUX release's t5_tokenizer folder)") from None


def _need_qwen3_tokenizer(path: Path, input_name: str, vocab_rows: int | None = None) -> None:
    """Z-Image's Qwen3 encoder needs its vocabulary: a tokenizer.json beside it, or (Qwen3's vocabulary,
    ``vocab_rows`` from the header) the built-in one.  Say so at validation."""
    from ..split_files import WrongModelFile, qwen3_tokenizer_path

    try:
        qwen3_tokenizer_path(path, vocab_rows)
    except WrongModelFile as exc:
        raise NodeInputError(input_name, exc.message, exc.fix) from None


def _blame(input_name: str, exc: Exception) -> NodeInputError:
    from ..split_files import WrongModelFile

    if isinstance(exc, WrongModelFile):
        return NodeInputError(input_name, exc.message, exc.fix)
    return load_error(input_name, exc)


# ------------------------------------------------------------------ loaders


def _check_unet(values: Mapping[str, Any], identities: list[Any], names: list[str]) -> None:
    from ..split_files import check_diffusion_model

    try:
        check_diffusion_model(identities[0], names[0])
    except ValueError as exc:
        raise _blame("unet_name", exc) from None


@node("diffusion.unet_loader", category="loaders", display_name="Load Diffusion Model",
      inputs=[Combo("unet_name", choices_for("diffusion_models"),
                    tooltip="a diffusion model file from models/diffusion_models or models/unet (FLUX.1 dev/schnell, "
                            "BFL or diffusers layout; SD3/SD3.5 MMDiT; a standalone SD1/SD2/SDXL UNet); "
                            ".safetensors, fp8 or ComfyUI-GGUF .gguf (kept quantized in memory)"),
              Combo("weight_dtype", WEIGHT_DTYPES, "default",
                    tooltip="fp8: keep the weights in 8 bits in memory (half of bf16), upcast per layer")],
      outputs=[Out("MODEL", "MODEL")],
      fingerprint=_checked_fingerprint("diffusion_models", ["unet_name"], _check_unet))
def unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str = "default"):  # noqa: ANN201
    """Load a diffusion model on its own (the text encoders and VAE come from their own loaders);
    the architecture and dev/schnell are read from the file's tensor shapes."""
    from ..split_files import load_diffusion_model_file

    path = resolve_model(ctx.settings, "diffusion_models", unet_name, "unet_name")
    try:
        return load_diffusion_model_file(path, device=ctx.device, weight_dtype=weight_dtype, home=home_device(ctx))
    except Exception as exc:
        raise _blame("unet_name", exc) from exc


def _check_clip(values: Mapping[str, Any], identities: list[Any], names: list[str]) -> None:
    from ..split_files import CLIP_TYPES as PARTS
    from ..split_files import check_text_encoder

    clip_type = str(values.get("type", "stable_diffusion"))
    wanted = PARTS.get(clip_type, ("clip",))
    if clip_type == "sd3":
        from ..split_files import sd3_slot_problem

        ident = identities[0]
        slot = "t5" if ident is not None and ident.kind == "t5" else "clip_l"
        try:
            if ident is not None and ident.kind not in ("t5", "clip", "openclip"):
                sd3_slot_problem(ident, slot, names[0])
        except ValueError as exc:
            raise _blame("clip_name", exc) from None
        return
    try:
        check_text_encoder(identities[0], names[0], wanted[0] if len(wanted) == 1 else "any", clip_type)
    except ValueError as exc:
        raise _blame("clip_name", exc) from None


def _sd_text_encoder(part: Any, device: Any) -> Any:
    from ..families import rules_for
    from ..runtime import TextEncoder

    family = "sd1" if part.module.config.activation == "quick_gelu" else "sd2"
    return TextEncoder((part.module,), part.tokenizer, rules_for(family), device)


@node("diffusion.clip_loader", category="loaders", display_name="Load CLIP",
      inputs=[Combo("clip_name", choices_for("text_encoders"), tooltip="a text encoder from models/text_encoders"),
              Combo("type", CLIP_TYPES, "stable_diffusion",
                    tooltip="what the encoder is used for: stable_diffusion (a CLIP file for SD1/SD2), flux "
                            "(one half of FLUX's pair; DualCLIPLoader loads both), sd3 (one of SD3's three; the "
                            "others are zeros; TripleCLIPLoader loads all three) or lumina2 (Z-Image's Qwen3-4B; "
                            "its tokenizer is built in, a tokenizer.json beside the file takes precedence)")],
      outputs=[Out("CLIP", "CLIP")],
      fingerprint=_checked_fingerprint("text_encoders", ["clip_name"], _check_clip))
def clip_loader(ctx: NodeContext, clip_name: str, type: str = "stable_diffusion"):  # noqa: A002, ANN201
    """Load one text-encoder file."""
    from ..split_files import flux_text_encoder, load_text_encoder_part

    path = resolve_model(ctx.settings, "text_encoders", clip_name, "clip_name")
    try:
        part = load_text_encoder_part(path, device=ctx.device, home=home_device(ctx))
    except Exception as exc:
        raise _blame("clip_name", exc) from exc
    if (type == "lumina2") != (part.kind == "qwen3"):
        from ..split_files import WrongModelFile, check_text_encoder, identify_file

        try:
            check_text_encoder(identify_file(path), clip_name, "qwen3" if type == "lumina2" else "any", type)
        except WrongModelFile as exc:
            raise _blame("clip_name", exc) from None
        raise NodeInputError("clip_name", f"{clip_name!r} is a {part.kind} text encoder; type {type!r} "
                             f"{'needs Qwen3-4B' if type == 'lumina2' else 'does not take a Qwen3'}",
                             "type lumina2 takes exactly Z-Image's Qwen3 file (qwen_3_4b.safetensors)")
    if type == "lumina2":
        from ..split_files import zimage_text_encoder

        return zimage_text_encoder(part, ctx.device)
    if type == "flux":
        return flux_text_encoder([part], ctx.device)
    if type == "sd3":
        from ..split_files import sd3_slot_of, sd3_text_encoder

        slots = {"clip_l": None, "clip_g": None, "t5": None}
        slots[sd3_slot_of(part)] = part
        return sd3_text_encoder(list(slots.values()), ctx.device)
    if part.kind != "clip":
        raise NodeInputError("clip_name", f"{clip_name!r} is a T5 text encoder, not CLIP",
                             "load T5 with DualCLIPLoader (type flux)")
    return _sd_text_encoder(part, ctx.device)


def _check_dual(values: Mapping[str, Any], identities: list[Any], names: list[str]) -> None:
    from ..split_files import check_text_encoder, pair_problem

    clip_type = str(values.get("type", "flux"))
    if clip_type == "sd3":
        _check_dual_sd3(identities, names)
        return
    for i, (ident, name) in enumerate(zip(identities, names, strict=True)):
        try:
            check_text_encoder(ident, name, "any", clip_type)
        except ValueError as exc:
            raise _blame(f"clip_name{i + 1}", exc) from None
    problem = pair_problem([i.kind if i is not None else None for i in identities], clip_type)
    if problem is not None:
        index, needed = problem
        try:
            check_text_encoder(identities[index], names[index], needed, clip_type)
        except ValueError as exc:
            raise _blame(f"clip_name{index + 1}", exc) from None


def _check_dual_sd3(identities: list[Any], names: list[str]) -> None:
    """Two of SD3's three encoders (either order): text encoders, and not twice the same slot."""
    from ..split_files import WrongModelFile, check_text_encoder, sd3_pair_slots

    for i, (ident, name) in enumerate(zip(identities, names, strict=True)):
        try:
            check_text_encoder(ident, name, "any", "sd3")
        except ValueError as exc:
            raise _blame(f"clip_name{i + 1}", exc) from None
    if None in identities:
        return
    if sd3_pair_slots([(i.kind, i.info.get("width")) for i in identities]) is None:
        raise _blame("clip_name2", WrongModelFile(
            f"{names[1]!r} is {identities[1].description}, the same kind as clip_name1",
            "type sd3 takes two different encoders of SD3's three (CLIP-L, CLIP-G, T5-XXL); the missing one "
            "is zeros, or use TripleCLIPLoader for all three"))


@node("diffusion.dual_clip_loader", category="loaders", display_name="DualCLIPLoader",
      inputs=[Combo("clip_name1", choices_for("text_encoders"), tooltip="FLUX: the CLIP-L file (either order)"),
              Combo("clip_name2", choices_for("text_encoders"), tooltip="FLUX: the T5-XXL file (either order)"),
              Combo("type", DUAL_CLIP_TYPES, "flux",
                    tooltip="flux: CLIP-L + T5-XXL; sd3: two of SD3's CLIP-L, CLIP-G, T5-XXL (the third is zeros)")],
      outputs=[Out("CLIP", "CLIP")],
      fingerprint=_checked_fingerprint("text_encoders", ["clip_name1", "clip_name2"], _check_dual))
def dual_clip_loader(ctx: NodeContext, clip_name1: str, clip_name2: str, type: str = "flux"):  # noqa: A002, ANN201
    """Load the two text encoders of a FLUX model (CLIP-L and T5-XXL) as one CLIP."""
    from ..split_files import flux_text_encoder, load_text_encoder_part

    parts = []
    for i, name in enumerate((clip_name1, clip_name2), start=1):
        path = resolve_model(ctx.settings, "text_encoders", name, f"clip_name{i}")
        try:
            parts.append(load_text_encoder_part(path, device=ctx.device, home=home_device(ctx)))
        except Exception as exc:
            raise _blame(f"clip_name{i}", exc) from exc
    if type == "sd3":
        from ..split_files import sd3_pair_slots, sd3_text_encoder

        names = sd3_pair_slots([(p.kind, None if p.kind == "t5" else p.module.config.width) for p in parts])
        if names is None:
            raise NodeInputError("clip_name2", "type sd3 needs two different encoders of SD3's three",
                                 "pick CLIP-L, CLIP-G or T5-XXL files of different kinds")
        slots: dict[str, Any] = {"clip_l": None, "clip_g": None, "t5": None}
        slots.update(zip(names, parts, strict=True))
        return sd3_text_encoder(list(slots.values()), ctx.device)
    if sorted(p.kind for p in parts) != ["clip", "t5"]:
        raise NodeInputError("clip_name2", "type flux needs one CLIP-L and one T5-XXL file",
                             "pick one file of each kind")
    return flux_text_encoder(parts, ctx.device)


# ------------------------------------------------------------------ FLUX nodes


@node("diffusion.empty_sd3_latent", category="latent", display_name="Empty SD3 Latent Image",
      inputs=[Int("width", 1024, min=16, max=MAX_RESOLUTION, step=16),
              Int("height", 1024, min=16, max=MAX_RESOLUTION, step=16),
              Int("batch_size", 1, min=1, max=4096)],
      outputs=[Out("LATENT", "LATENT")], preflight=est.empty_sd3_latent)
def empty_sd3_latent(ctx: NodeContext, width: int, height: int, batch_size: int):  # noqa: ANN201
    """Blank 16-channel latents (FLUX, SD3) at 1/8 of the pixel size."""
    import torch

    from ..runtime import Latent

    for name, value in (("width", width), ("height", height)):
        if value % 8:
            raise NodeInputError(name, f"{value} is not a multiple of 8", "use a multiple of 16")
    return Latent(torch.zeros(batch_size, 16, height // 8, width // 8), downscale=8)


@node("diffusion.flux_guidance", category="conditioning/flux", display_name="FluxGuidance",
      inputs=[In("conditioning", "CONDITIONING"),
              Float("guidance", 3.5, min=0.0, max=100.0, step=0.1,
                    tooltip="FLUX-dev's distilled guidance strength (use instead of CFG)")],
      outputs=[Out("CONDITIONING", "CONDITIONING")])
def flux_guidance(ctx: NodeContext, conditioning, guidance: float):  # noqa: ANN001, ANN201
    """Set the guidance strength a FLUX-dev model is conditioned on (schnell ignores it)."""
    from dataclasses import replace

    from ..runtime import map_entries

    return map_entries(conditioning, lambda c: replace(c, guidance=float(guidance)))


def _need_flux(model: Any, node_name: str) -> None:
    from ..flux_runtime import FluxModel

    if not isinstance(model, FluxModel):
        raise NodeInputError("model", f"{node_name} needs a FLUX model, got a {model.rules.description} model",
                             "connect the MODEL of Load Diffusion Model (a FLUX file)")


@node("diffusion.model_sampling_flux", category="advanced/model", display_name="ModelSamplingFlux",
      inputs=[In("model", "MODEL"), Float("max_shift", 1.15, min=0.0, max=100.0, step=0.01),
              Float("base_shift", 0.5, min=0.0, max=100.0, step=0.01),
              Int("width", 1024, min=16, max=MAX_RESOLUTION, step=8),
              Int("height", 1024, min=16, max=MAX_RESOLUTION, step=8)],
      outputs=[Out("MODEL", "MODEL")])
def model_sampling_flux(ctx: NodeContext, model, max_shift: float, base_shift: float,  # noqa: ANN001, ANN201
                        width: int, height: int):
    """Shift the noise schedule for the image size: base_shift at 256 image tokens, max_shift at 4096
    (FLUX's resolution-dependent shift; larger images spend more steps at high noise)."""
    from ..sampling.model_sampling import flux_mu, flux_schedule

    _need_flux(model, "ModelSamplingFlux")
    return model.with_schedule(flux_schedule(flux_mu(width, height, base_shift, max_shift)))


@node("diffusion.basic_guider", category="sampling/custom", display_name="Basic Guider",
      inputs=[In("model", "MODEL"), In("conditioning", "CONDITIONING")],
      outputs=[Out("GUIDER", "GUIDER")])
def basic_guider(ctx: NodeContext, model, conditioning) -> CFGGuide:  # noqa: ANN001
    """Guide with one prompt and no negative (one model call per step; what FLUX-dev uses)."""
    return CFGGuide(model, conditioning, None, 1.0)


@node("diffusion.conditioning_zero_out", category="advanced/conditioning", display_name="Conditioning Zero Out",
      inputs=[In("conditioning", "CONDITIONING")], outputs=[Out("CONDITIONING", "CONDITIONING")])
def conditioning_zero_out(ctx: NodeContext, conditioning):  # noqa: ANN001, ANN201
    """All-zero text features and pooled vector of the same shapes, for every entry: an "empty"
    negative for models trained without one (FLUX); guidance, ControlNets, areas and masks are kept."""
    from dataclasses import replace

    import torch

    from ..runtime import map_entries

    def zero(c):  # noqa: ANN001, ANN202
        pooled = torch.zeros_like(c.pooled) if c.pooled is not None else None
        y = torch.zeros_like(c.y) if c.y is not None else None
        return replace(c, context=torch.zeros_like(c.context), pooled=pooled, y=y)

    return map_entries(conditioning, zero)


@node("diffusion.clip_text_encode_flux", category="conditioning/flux", display_name="CLIP Text Encode (FLUX)",
      inputs=[In("clip", "CLIP"), String("clip_l", "", multiline=True, tooltip="prompt for CLIP-L (pooled vector)"),
              String("t5xxl", "", multiline=True,
                     tooltip="prompt for T5-XXL (the token sequence); (word:1.2) weights apply here"),
              Float("guidance", 3.5, min=0.0, max=100.0, step=0.1)],
      outputs=[Out("CONDITIONING", "CONDITIONING")])
def clip_text_encode_flux(ctx: NodeContext, clip, clip_l: str, t5xxl: str, guidance: float):  # noqa: ANN001, ANN201
    """Encode separate prompts for FLUX's two text encoders, with the guidance strength."""
    import torch

    from ..flux_runtime import ConditioningMismatch, FluxTextEncoder

    if not isinstance(clip, FluxTextEncoder):
        raise NodeInputError("clip", "CLIP Text Encode (FLUX) needs FLUX's text encoders (CLIP-L + T5-XXL)",
                             "connect DualCLIPLoader (type flux)")
    from .device_memory import encoders_on_device

    try:  # T5's sequence is at least 256 tokens: the thread policy's size of the work
        with encoders_on_device(ctx, clip.encoders), cpu_threads(ctx, clip.encoders, clip.t5_min_tokens), \
                torch.inference_mode():
            return clip.encode_pair(clip_l, t5xxl, float(guidance))
    except ConditioningMismatch as exc:
        raise NodeInputError("clip", str(exc), "load CLIP-L and T5-XXL with DualCLIPLoader (type flux)") from None


NODES = [unet_loader, clip_loader, dual_clip_loader, empty_sd3_latent, flux_guidance, model_sampling_flux,
         basic_guider, conditioning_zero_out, clip_text_encode_flux]
