"""Combining prompts: ComfyUI's Conditioning* nodes over lists of conditioning entries.

A CONDITIONING value is one entry or a ``ConditioningList`` (see ``runtime.Conditioning``).
Combine joins lists (the sampler blends the entries' predictions); Concat and Average
change the text features of each entry; SetArea/SetMask/SetAreaStrength/SetTimestepRange
say where, how strongly and when each entry acts.  Torch is imported only when a node runs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Combo, Float, In, Int, Out, node

from .common import MAX_RESOLUTION

_COND = "CONDITIONING"


def _out() -> list[Out]:
    return [Out(_COND, _COND)]


@node("diffusion.conditioning_combine", category="conditioning", display_name="Conditioning (Combine)",
      inputs=[In("conditioning_1", _COND), In("conditioning_2", _COND)], outputs=_out())
def conditioning_combine(ctx: NodeContext, conditioning_1: Any, conditioning_2: Any) -> Any:
    """Both prompts' entries in one list: the sampler runs each and averages their predictions,
    weighted by area, mask and strength (e.g. two regional prompts)."""
    from ..runtime import conditioning_entries, conditioning_value

    return conditioning_value(conditioning_entries(conditioning_1) + conditioning_entries(conditioning_2))


def _first_from(conditioning_from: Any, ctx: NodeContext, node_name: str) -> Any:
    from ..runtime import conditioning_entries

    entries = conditioning_entries(conditioning_from)
    if len(entries) > 1:
        ctx.log(f"{node_name}: conditioning_from has {len(entries)} entries; only the first is used")
    return entries[0]


@node("diffusion.conditioning_concat", category="conditioning", display_name="Conditioning (Concat)",
      inputs=[In("conditioning_to", _COND), In("conditioning_from", _COND)], outputs=_out())
def conditioning_concat(ctx: NodeContext, conditioning_to: Any, conditioning_from: Any) -> Any:
    """Append the tokens of ``conditioning_from`` (its first entry) to every entry of
    ``conditioning_to``: one longer prompt whose halves do not attend to each other in the
    text encoder.  Pooled vectors and everything else come from ``conditioning_to``."""
    import torch

    from ..runtime import map_entries

    src = _first_from(conditioning_from, ctx, "Conditioning (Concat)")

    def concat(c: Any) -> Any:
        if c.context.shape[-1] != src.context.shape[-1]:
            raise NodeInputError("conditioning_from", f"its features are {src.context.shape[-1]} wide, "
                                 f"conditioning_to's are {c.context.shape[-1]}",
                                 "encode both prompts with the same text encoder")
        return replace(c, context=torch.cat([c.context, src.context.to(c.context.dtype)], dim=1))

    return map_entries(conditioning_to, concat)


@node("diffusion.conditioning_average", category="conditioning", display_name="Conditioning (Average)",
      inputs=[In("conditioning_to", _COND), In("conditioning_from", _COND),
              Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="1 = only conditioning_to, 0 = only conditioning_from")],
      outputs=_out())
def conditioning_average(ctx: NodeContext, conditioning_to: Any, conditioning_from: Any,
                         conditioning_to_strength: float) -> Any:
    """Blend two prompts' features: ``to * s + from * (1 - s)`` per token (``from`` cut or
    zero-padded to ``to``'s length), and the pooled vectors likewise."""
    import torch

    from ..runtime import map_entries

    src = _first_from(conditioning_from, ctx, "Conditioning (Average)")
    s = float(conditioning_to_strength)

    def average(c: Any) -> Any:
        if c.context.shape[-1] != src.context.shape[-1]:
            raise NodeInputError("conditioning_from", f"its features are {src.context.shape[-1]} wide, "
                                 f"conditioning_to's are {c.context.shape[-1]}",
                                 "encode both prompts with the same text encoder")
        n = c.context.shape[1]
        other = src.context[:, :n].to(c.context.dtype)
        if other.shape[1] < n:
            pad = torch.zeros(other.shape[0], n - other.shape[1], other.shape[2], dtype=other.dtype)
            other = torch.cat([other, pad], dim=1)
        pooled = c.pooled
        if src.pooled is not None:
            pooled = src.pooled if c.pooled is None else c.pooled * s + src.pooled * (1 - s)
        return replace(c, context=c.context * s + other * (1 - s), pooled=pooled)

    return map_entries(conditioning_to, average)


def _set(conditioning: Any, **changes: Any) -> Any:
    from ..runtime import map_entries

    return map_entries(conditioning, lambda c: replace(c, **changes))


_STRENGTH = Float("strength", 1.0, min=0.0, max=10.0, step=0.01, tooltip="weight against the other entries")


@node("diffusion.conditioning_set_area", category="conditioning", display_name="Conditioning (Set Area)",
      inputs=[In("conditioning", _COND), Int("width", 64, min=8, max=MAX_RESOLUTION, step=8),
              Int("height", 64, min=8, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              _STRENGTH],
      outputs=_out())
def conditioning_set_area(ctx: NodeContext, conditioning: Any, width: int, height: int, x: int, y: int,
                          strength: float) -> Any:
    """Apply the prompt only inside a rectangle (image pixels; rounded down to latent cells).
    The minimum size is 8 px, not ComfyUI's 64, because small-VAE models have small images."""
    from ..runtime import Area

    return _set(conditioning, area=Area(height, width, y, x), strength=float(strength), set_area_to_bounds=False)


@node("diffusion.conditioning_set_area_percentage", category="conditioning",
      display_name="Conditioning (Set Area with Percentage)",
      inputs=[In("conditioning", _COND), Float("width", 1.0, min=0.0, max=1.0, step=0.01),
              Float("height", 1.0, min=0.0, max=1.0, step=0.01), Float("x", 0.0, min=0.0, max=1.0, step=0.01),
              Float("y", 0.0, min=0.0, max=1.0, step=0.01), _STRENGTH],
      outputs=_out())
def conditioning_set_area_percentage(ctx: NodeContext, conditioning: Any, width: float, height: float, x: float,
                                     y: float, strength: float) -> Any:
    """Apply the prompt only inside a rectangle given as fractions of the image (any size)."""
    from ..runtime import Area

    return _set(conditioning, area=Area(height, width, y, x, fractions=True), strength=float(strength),
                set_area_to_bounds=False)


@node("diffusion.conditioning_set_area_strength", category="conditioning",
      display_name="Conditioning (Set Area Strength)", inputs=[In("conditioning", _COND), _STRENGTH],
      outputs=_out())
def conditioning_set_area_strength(ctx: NodeContext, conditioning: Any, strength: float) -> Any:
    """Change how strongly the prompt weighs against the entries it is combined with."""
    return _set(conditioning, strength=float(strength))


@node("diffusion.conditioning_set_mask", category="conditioning", display_name="Conditioning (Set Mask)",
      inputs=[In("conditioning", _COND), In("mask", "MASK"),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Combo("set_cond_area", ["default", "mask bounds"], "default",
                    tooltip="mask bounds: run the model only on the mask's bounding box (faster, more detail)")],
      outputs=_out())
def conditioning_set_mask(ctx: NodeContext, conditioning: Any, mask: Any, strength: float,
                          set_cond_area: str) -> Any:
    """Weight the prompt per pixel by a mask (1 = full effect), scaled by strength."""
    if mask is None or mask.ndim not in (2, 3):
        raise NodeInputError("mask", f"expected a MASK [H, W] or [B, H, W], got "
                             f"{None if mask is None else tuple(mask.shape)}", "connect a mask output")
    m = mask[None] if mask.ndim == 2 else mask
    return _set(conditioning, mask=m.float().cpu(), mask_strength=float(strength),
                set_area_to_bounds=set_cond_area != "default")


@node("diffusion.conditioning_set_timestep_range", category="advanced/conditioning",
      display_name="Conditioning (Set Timestep Range)",
      inputs=[In("conditioning", _COND), Float("start", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end", 1.0, min=0.0, max=1.0, step=0.001)],
      outputs=_out())
def conditioning_set_timestep_range(ctx: NodeContext, conditioning: Any, start: float, end: float) -> Any:
    """Use the prompt only from ``start`` to ``end`` of the schedule (0 = first step, 1 = last);
    combine two such prompts to switch prompts during sampling."""
    if end < start:
        raise NodeInputError("end", f"end ({end}) is before start ({start})", "make end >= start")
    return _set(conditioning, start_percent=float(start), end_percent=float(end))


NODES = [conditioning_combine, conditioning_concat, conditioning_average, conditioning_set_area,
         conditioning_set_area_percentage, conditioning_set_area_strength, conditioning_set_mask,
         conditioning_set_timestep_range]
