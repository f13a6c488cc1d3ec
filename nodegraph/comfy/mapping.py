"""The vocabulary of ComfyUI mappings: ComfyUI ``class_type`` <-> node type, input by input.

The engine knows no pack's nodes: each node pack describes how its own node
types correspond to ComfyUI classes (a :class:`ComfyMappings` of
:class:`NodeMap` rows, plus optional hooks) and registers it with its nodes
through ``Registry.add_pack(name, nodes, comfy=...)``; the importer and
exporter look it up through the registry (:class:`ComfyTable`).  A
third-party pack takes part in ComfyUI import/export exactly like ours.

Each :class:`NodeMap` lists the ComfyUI inputs of one class *in ComfyUI's
declaration order*, because that order is what the UI format's positional
``widgets_values`` follow (link-only inputs have no position; a seed widget is
followed by the frontend-only "control_after_generate" value).  Outputs are
listed by ComfyUI slot index, which is how both ComfyUI formats address them.

Nothing here imports ComfyUI, torch or a node pack, so importing a workflow
stays instant; classes no registered pack maps become placeholders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import Registry
    from .result import ImportResult

#: Values of ComfyUI's frontend-only "control_after_generate" widget.
SEED_CONTROLS = frozenset({"fixed", "increment", "decrement", "randomize"})


@dataclass(frozen=True)
class Param:
    """One ComfyUI input of a mapped class.

    ``ours`` is our input name (default: the same); ``drop`` marks a ComfyUI
    input we have no equivalent for (its value is ignored on import and
    ``comfy_default`` is written on export when ComfyUI requires it).
    ``values`` renames choice values exactly (both directions); ``approx``
    renames them one way with a warning, for near-equivalents.  ``kind`` is
    "model:<folder>" or "image" for file names that need path normalising.
    """

    comfy: str
    widget: bool = True
    ours: str | None = None
    seed: bool = False
    values: Mapping[str, str] = field(default_factory=dict)
    approx: Mapping[str, str] = field(default_factory=dict)
    kind: str | None = None
    drop: bool = False
    comfy_default: Any = None
    factor: float | None = None  # ours = round(theirs * factor), for inputs on another scale
    factor_note: str = ""  # the warning an approximate rescaling gives

    @property
    def name(self) -> str:
        """Our input name."""
        return self.ours or self.comfy

    @property
    def model_folder(self) -> str | None:
        return self.kind.split(":", 1)[1] if self.kind and self.kind.startswith("model:") else None

    def to_ours(self, value: Any) -> tuple[Any, str | None]:
        """(our value, warning or None) for a ComfyUI widget value."""
        if self.factor is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return round(value * self.factor), (self.factor_note or None)
        if isinstance(value, str):
            if value in self.values:
                return self.values[value], None
            if value in self.approx:
                new = self.approx[value]
                return new, f"{self.comfy} {value!r} has no exact equivalent; using {new!r}"
            if self.kind is not None:
                return normalise_file_name(value, image=self.kind == "image")
        return value, None

    def to_comfy(self, value: Any) -> Any:
        if self.factor is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return round(value / self.factor, 4)
        for theirs, ours in self.values.items():
            if value == ours:
                return theirs
        return value


def normalise_file_name(name: str, *, image: bool = False) -> tuple[str, str | None]:
    """ComfyUI names files relative to their folder with the OS separator (``sub\\x.safetensors``
    on Windows); ours are ``/``-separated.  Image names may carry an ``[input]`` annotation."""
    out = name.replace("\\", "/")
    warning = None
    if image:
        for tag in (" [input]", " [output]", " [temp]"):
            if out.endswith(tag):
                out = out[: -len(tag)]
                if tag != " [input]":
                    folder = tag.strip(" []")
                    warning = f"image {name!r} refers to ComfyUI's {folder} folder; looked up in the input folder"
    return out, warning


def L(comfy: str, ours: str | None = None, *, drop: bool = False) -> Param:  # noqa: N802 - table shorthand
    """A link-only input (MODEL, IMAGE…)."""
    return Param(comfy, widget=False, ours=ours, drop=drop)


def W(comfy: str, ours: str | None = None, **kw: Any) -> Param:  # noqa: N802 - table shorthand
    """A widget input (has a position in ``widgets_values``)."""
    return Param(comfy, widget=True, ours=ours, **kw)


@dataclass(frozen=True)
class NodeMap:
    """How one ComfyUI class maps onto one of our node types."""

    comfy: str
    ours: str
    params: tuple[Param, ...] = ()
    outputs: tuple[str, ...] = ()  # our output names, by ComfyUI output slot
    ui_widgets: tuple[str, ...] = ()  # frontend-only widgets after the real ones (LoadImage's upload button)

    def param(self, comfy_name: str) -> Param | None:
        for p in self.params:
            if p.comfy == comfy_name:
                return p
        return None

    def param_for_ours(self, our_name: str) -> Param | None:
        for p in self.params:
            if not p.drop and p.name == our_name:
                return p
        return None

    @property
    def widgets(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.widget)


@dataclass(frozen=True)
class Reroute:
    """The node type that stands for ComfyUI's frontend-only ``Reroute`` (one input, one output,
    passes its value through).  Imported reroutes become this type; export follows them to their
    source, since ComfyUI's API format has no reroutes."""

    type: str
    input: str = "input"
    output: str = "output"


#: ``hook(result)`` runs after every ComfyUI import, in registration order: a pack's fix-ups of
#: its own nodes (e.g. links ComfyUI makes implicitly).  Report compromises in ``result.warnings``.
ImportHook = Callable[["ImportResult"], None]


@dataclass(frozen=True)
class ComfyMappings:
    """Everything one node pack contributes to ComfyUI import/export.

    ``maps``: one row per ComfyUI class (several classes may map onto one of our types; export
    uses the first).  ``reroute``: the pack's pass-through node, if it offers one.
    ``constants``: node types without a ComfyUI class whose output is the value of their one
    widget (a seed node); export folds them into the ComfyUI widgets they feed.
    ``import_hooks``: fix-ups run after every import (see :data:`ImportHook`).
    ``implicit_inputs``: ``(node type, input, port type)`` of inputs ComfyUI feeds implicitly (our
    empty latent's VAE); inside an imported subgraph such an unlinked input takes the subgraph's
    one input of that port type, since the import hooks cannot see across the boundary.
    """

    maps: tuple[NodeMap, ...] = ()
    reroute: Reroute | None = None
    constants: tuple[str, ...] = ()
    import_hooks: tuple[ImportHook, ...] = ()
    implicit_inputs: tuple[tuple[str, str, str], ...] = ()

    def check(self, registry: Registry, pack: str = "") -> None:
        """Raise :class:`SpecError` for a row that does not match the registered node specs, so an
        input renamed in a pack without its mapping fails when the pack loads, not in a user's import."""
        where = f"pack {pack!r}: " if pack else ""
        for m in self.maps:
            spec = registry.get(m.ours)
            if spec is None:
                raise SpecError(f"{where}ComfyUI class {m.comfy!r} maps onto unknown node type {m.ours!r}")
            for p in m.params:
                if not p.drop and spec.input(p.name) is None:
                    raise SpecError(f"{where}ComfyUI {m.comfy}.{p.comfy} maps onto input {p.name!r}, which "
                                    f"{m.ours!r} does not have (inputs: {[i.name for i in spec.inputs]})")
            for out in m.outputs:
                if spec.output(out) is None:
                    raise SpecError(f"{where}ComfyUI {m.comfy} lists output {out!r}, which {m.ours!r} does not "
                                    f"have (outputs: {[o.name for o in spec.outputs]})")
        for t in (*self.constants, *((self.reroute.type,) if self.reroute else ())):
            if t not in registry:
                raise SpecError(f"{where}ComfyUI support names unknown node type {t!r}")


@dataclass(frozen=True)
class ComfyTable:
    """The ComfyUI mappings of every pack in a registry, merged: what import and export consult."""

    by_comfy: Mapping[str, NodeMap]
    by_ours: Mapping[str, NodeMap]
    reroute: Reroute | None = None
    constants: frozenset[str] = frozenset()
    import_hooks: tuple[ImportHook, ...] = ()
    implicit_inputs: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def merge(cls, contributions: Iterable[tuple[str, ComfyMappings]]) -> ComfyTable:
        """Merge ``(pack, mappings)`` in registration order.  Two packs mapping the same ComfyUI
        class is an error naming both (the registry checks it when the second pack loads)."""
        by_comfy: dict[str, NodeMap] = {}
        owner: dict[str, str] = {}
        by_ours: dict[str, NodeMap] = {}
        reroute: Reroute | None = None
        constants: set[str] = set()
        hooks: list[ImportHook] = []
        implicit: list[tuple[str, str, str]] = []
        for pack, c in contributions:
            for m in c.maps:
                if m.comfy in by_comfy:
                    raise SpecError(f"ComfyUI class {m.comfy!r} is mapped by pack {owner[m.comfy]!r} and again "
                                    f"by pack {pack!r}; only one pack may map a ComfyUI class")
                by_comfy[m.comfy], owner[m.comfy] = m, pack
                by_ours.setdefault(m.ours, m)
            reroute = reroute or c.reroute
            constants.update(c.constants)
            hooks.extend(c.import_hooks)
            implicit.extend(c.implicit_inputs)
        return cls(MappingProxyType(by_comfy), MappingProxyType(by_ours), reroute, frozenset(constants),
                   tuple(hooks), tuple(implicit))

    @classmethod
    def of(cls, registry: Registry) -> ComfyTable:
        """The table of the packs registered in ``registry``."""
        return cls.merge(registry.comfy_mappings())

    def mapping_for(self, class_type: str) -> NodeMap | None:
        return self.by_comfy.get(class_type)


PLACEHOLDER_PREFIX = "comfy:"
#: Frontend-only ComfyUI node types that never reach its backend.
FRONTEND_ONLY = frozenset({"PrimitiveNode", "Reroute", "Note", "MarkdownNote"})


def placeholder_type(class_type: str) -> str:
    """The node type of a kept-but-unmapped ComfyUI node.  No pack registers it, so validation
    fails with ``unknown_type`` naming the ComfyUI class -- the user sees exactly what is missing."""
    return PLACEHOLDER_PREFIX + class_type


__all__ = ["FRONTEND_ONLY", "ComfyMappings", "ComfyTable", "ImportHook", "L", "NodeMap", "PLACEHOLDER_PREFIX",
           "Param", "Reroute", "SEED_CONTROLS", "W", "normalise_file_name", "placeholder_type"]
