"""SD3 / SD3.5 nodes (ComfyUI's meaning): TripleCLIPLoader and ModelSamplingSD3.

The MMDiT itself loads with Load Diffusion Model, the 16-channel latent comes from Empty
SD3 Latent Image and the VAE from Load VAE (see :mod:`.flux`, whose loaders and
validation-time file checks these nodes reuse).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, Float, In, Out, node

from ..paths import choices_for
from .common import resolve_model
from .flux import _blame, _checked_fingerprint

_SLOTS = (("clip_name1", "clip_l"), ("clip_name2", "clip_g"), ("clip_name3", "t5"))


def _check_triple(values: Mapping[str, Any], identities: list[Any], names: list[str]) -> None:
    """Each file must fit its slot (CLIP-L, CLIP-G, T5-XXL); an empty slot is allowed (zeros)."""
    from ..split_files import sd3_slot_problem

    for (input_name, slot), ident, name in zip(_SLOTS, identities, names, strict=True):
        try:
            sd3_slot_problem(ident, slot, name)
        except ValueError as exc:
            raise _blame(input_name, exc) from None


@node("diffusion.triple_clip_loader", category="loaders", display_name="TripleCLIPLoader",
      inputs=[Combo("clip_name1", choices_for("text_encoders"), optional=True,
                    tooltip="SD3: the CLIP-L file (clip_l.safetensors); empty = zeros"),
              Combo("clip_name2", choices_for("text_encoders"), optional=True,
                    tooltip="SD3: the OpenCLIP bigG file (clip_g.safetensors); empty = zeros"),
              Combo("clip_name3", choices_for("text_encoders"), optional=True,
                    tooltip="SD3: the T5-XXL file (t5xxl_fp16 / fp8); empty = zeros (77 tokens)")],
      outputs=[Out("CLIP", "CLIP")],
      fingerprint=_checked_fingerprint("text_encoders", [s for s, _ in _SLOTS], _check_triple))
def triple_clip_loader(ctx: NodeContext, clip_name1: str | None = None, clip_name2: str | None = None,
                       clip_name3: str | None = None):  # noqa: ANN201
    """Load SD3's three text encoders as one CLIP; a missing one contributes zeros (as diffusers does)."""
    from ..split_files import load_text_encoder_part, sd3_text_encoder
    from .device_memory import home_device

    parts: list[Any] = []
    for (input_name, _), name in zip(_SLOTS, (clip_name1, clip_name2, clip_name3), strict=True):
        if not name:
            parts.append(None)
            continue
        path = resolve_model(ctx.settings, "text_encoders", name, input_name)
        try:
            parts.append(load_text_encoder_part(path, device=ctx.device, home=home_device(ctx)))
        except Exception as exc:
            raise _blame(input_name, exc) from exc
    if not any(parts):
        raise NodeInputError("clip_name1", "TripleCLIPLoader got no file", "pick at least one text encoder")
    return sd3_text_encoder(parts, ctx.device)


@node("diffusion.model_sampling_sd3", category="advanced/model", display_name="ModelSamplingSD3",
      inputs=[In("model", "MODEL"),
              Float("shift", 3.0, min=0.0, max=100.0, step=0.01,
                    tooltip="flow time shift: larger spends more steps at high noise (SD3: 3.0)")],
      outputs=[Out("MODEL", "MODEL")])
def model_sampling_sd3(ctx: NodeContext, model, shift: float):  # noqa: ANN001, ANN201
    """Set the fixed time shift of a flow-matching transformer's noise schedule (ComfyUI's ModelSamplingSD3)."""
    from dataclasses import replace

    if not getattr(model.schedule, "is_flow", False):
        raise NodeInputError("model", f"ModelSamplingSD3 needs a flow-matching model (SD3, FLUX), got a "
                             f"{model.rules.description} model", "connect the MODEL of Load Diffusion Model")
    return model.with_schedule(replace(model.schedule, shift=float(shift)))


NODES = [triple_clip_loader, model_sampling_sd3]
