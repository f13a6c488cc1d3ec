"""Port types and the one rule that decides which outputs may feed which inputs.

Types are plain strings (``"IMAGE"``, ``"LATENT"`` …) so that workflow files,
node specs written by third parties and the GUI all speak the same language
without importing a class hierarchy.  The table below gives each built-in type
a colour (the GUI paints ports with it) and a one-line meaning (the node
catalogue shows it).  Packs may add their own types with :func:`register_type`
on a :class:`TypeTable`; nothing here is global mutable state except the
immutable built-in table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ANY = "*"
"""Wildcard type: an input of type ``*`` accepts any output, and an output of
type ``*`` (e.g. a reroute) may feed any input."""


@dataclass(frozen=True)
class PortType:
    """A named port type with the colour the editor paints it in."""

    name: str
    color: str
    description: str = ""


BUILTIN_TYPES: tuple[PortType, ...] = (
    PortType("MODEL", "#b39ddb", "Denoising network (UNet) with its sampling configuration"),
    PortType("CLIP", "#ffd54f", "Text encoder(s) with their tokenizer"),
    PortType("VAE", "#ef5350", "Image autoencoder: pixels <-> latents"),
    PortType("CONDITIONING", "#ffa726", "Encoded prompt(s) for the sampler: one or more entries, each with its "
             "ControlNets and optional area, mask, strength and step range"),
    PortType("LATENT", "#f48fb1", "Latent images (and optional noise mask)"),
    PortType("IMAGE", "#64b5f6", "Batch of RGB images, float 0..1, shape [B,H,W,C]"),
    PortType("MASK", "#81c784", "Batch of masks, float 0..1, shape [B,H,W]"),
    PortType("CONTROL_NET", "#26a69a", "ControlNet model"),
    PortType("UPSCALE_MODEL", "#8d6e63", "Image super-resolution model"),
    PortType("NOISE", "#90a4ae", "Seeded noise source"),
    PortType("SAMPLER", "#7986cb", "Sampling algorithm"),
    PortType("SIGMAS", "#4dd0e1", "Noise-level schedule"),
    PortType("GUIDER", "#ba68c8", "Model plus guidance (e.g. CFG) ready to denoise"),
    PortType("INT", "#aed581", "Integer"),
    PortType("FLOAT", "#9ccc65", "Floating-point number"),
    PortType("STRING", "#e0e0e0", "Text"),
    PortType("BOOLEAN", "#c5e1a5", "True/False"),
    PortType(ANY, "#bdbdbd", "Any type"),
)


class TypeTable:
    """Known port types.  Each registry owns one, so packs never share state."""

    def __init__(self, types: Iterable[PortType] = BUILTIN_TYPES) -> None:
        self._types: dict[str, PortType] = {t.name: t for t in types}

    def register_type(self, name: str, color: str, description: str = "") -> PortType:
        """Add a pack-specific type; re-registering identically is a no-op."""
        if not name or name != name.strip():
            raise ValueError(f"invalid port type name {name!r}")
        existing = self._types.get(name)
        new = PortType(name, color, description)
        if existing is not None and existing != new:
            raise ValueError(f"port type {name!r} is already registered with a different definition")
        self._types[name] = new
        return new

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        parts = split_union(name)
        return bool(parts) and all(part in self._types for part in parts)  # "" is not a type

    def get(self, name: str) -> PortType | None:
        return self._types.get(name)

    def color(self, name: str) -> str:
        t = self._types.get(name)
        return t.color if t else "#bdbdbd"

    def all(self) -> Mapping[str, PortType]:
        return dict(self._types)


def split_union(type_name: str) -> tuple[str, ...]:
    """``"IMAGE,MASK"`` declares an input that accepts either type."""
    return tuple(p.strip() for p in type_name.split(",") if p.strip())


def compatible(output_type: str, input_type: str) -> bool:
    """May an output of ``output_type`` be linked to an input of ``input_type``?

    The rule is deliberately small and explicit:

    * identical names match;
    * ``*`` on either side matches anything (reroutes, generic utility nodes);
    * an input may declare a comma-separated union (``"IMAGE,MASK"``) and
      accepts any member;
    * nothing converts implicitly — an INT output does not feed a FLOAT input.
      Use a conversion node; silent numeric coercion hides mistakes.
    """
    if output_type == input_type or output_type == ANY or input_type == ANY:
        return True
    accepted = split_union(input_type)
    return any(o in accepted or o == ANY for o in split_union(output_type))
