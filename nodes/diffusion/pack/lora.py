"""LoRA loader nodes: merge a LoRA into copies of MODEL and CLIP.

The base model sits in the engine's cache and may be shared with other runs
and branches, so the merge writes into a shallow copy that shares every
untouched weight (see ``models/lora.py``); the base is never modified.
"""

from __future__ import annotations

from nodegraph.context import NodeContext
from nodegraph.spec import Combo, Float, In, Out, node
from nodes.shared.model_paths import choices_for

from .common import load_error, model_file_fingerprint, resolve_model


def _apply(ctx: NodeContext, model, clip, lora_name: str, strength_model: float,  # noqa: ANN001, ANN202
           strength_clip: float):
    from dataclasses import replace

    from ..models.lora import apply_lora, load_lora

    path = resolve_model(ctx.settings, "loras", lora_name, "lora_name")
    try:
        sd = load_lora(path)
        out = apply_lora(model.unet if model is not None else None,
                         tuple(clip.encoders) if clip is not None else None, sd, strength_model, strength_clip,
                         unet_config=model.unet.config if model is not None else None, name=str(path))
    except Exception as exc:
        raise load_error("lora_name", exc) from exc
    if out.unmatched:
        ctx.log(f"{len(out.unmatched)} LoRA key(s) matched no layer, e.g. {out.unmatched[:3]}")
    tag = f"{lora_name}@{strength_model:g}/{strength_clip:g}"
    new_model = model.with_unet(out.unet, tag) if model is not None else None
    new_clip = None
    if clip is not None:
        encoders = out.clip if isinstance(out.clip, tuple) else (out.clip,)
        if hasattr(clip, "with_encoders"):  # FLUX's CLIP-L + T5 pair
            new_clip = clip.with_encoders(encoders, tag)
        else:
            new_clip = replace(clip, encoders=encoders, patches=clip.patches + (tag,))
    return new_model, new_clip


@node("diffusion.lora_loader", category="loaders", display_name="Load LoRA",
      inputs=[In("model", "MODEL"), In("clip", "CLIP"), Combo("lora_name", choices_for("loras")),
              Float("strength_model", 1.0, min=-20.0, max=20.0, step=0.01),
              Float("strength_clip", 1.0, min=-20.0, max=20.0, step=0.01)],
      outputs=[Out("MODEL", "MODEL"), Out("CLIP", "CLIP")],
      fingerprint=model_file_fingerprint("loras", "lora_name"))
def lora_loader(ctx: NodeContext, model, clip, lora_name: str, strength_model: float,  # noqa: ANN001, ANN201
                strength_clip: float):
    """Merge a LoRA (kohya, LDM or peft naming) into the UNet and text encoder(s)."""
    return _apply(ctx, model, clip, lora_name, strength_model, strength_clip)


@node("diffusion.lora_loader_model_only", category="loaders", display_name="Load LoRA (model only)",
      inputs=[In("model", "MODEL"), Combo("lora_name", choices_for("loras")),
              Float("strength_model", 1.0, min=-20.0, max=20.0, step=0.01)],
      outputs=[Out("MODEL", "MODEL")],
      fingerprint=model_file_fingerprint("loras", "lora_name"))
def lora_loader_model_only(ctx: NodeContext, model, lora_name: str, strength_model: float):  # noqa: ANN001, ANN201
    """Merge a LoRA into the UNet only."""
    return _apply(ctx, model, None, lora_name, strength_model, 0.0)[0]


NODES = [lora_loader, lora_loader_model_only]
