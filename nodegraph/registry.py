"""The node catalogue: which node types exist and which pack provides each.

A :class:`Registry` is an ordinary object — there is no module-level registry
to mutate — so tests, the GUI and a server can each hold their own.  Packs
contribute nodes through one call, :meth:`Registry.add_pack`, made from a
``register(registry)`` function that is either called directly or discovered
through the ``nodegraph.nodes`` entry-point group (how pip-installed
third-party packs plug in).  The same call carries the pack's ComfyUI
mappings (``comfy=``), so the ComfyUI importer and exporter know only what the
registered packs tell them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .spec import NodeSpec, check_spec
from .subgraph import SubgraphDef
from .types import TypeTable

if TYPE_CHECKING:  # pragma: no cover
    from .comfy.mapping import ComfyMappings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nodegraph.nodes"
PackRegisterFn = Callable[["Registry"], None]


class Registry:
    """Node types by id, plus the port-type table they use."""

    def __init__(self) -> None:
        self.types = TypeTable()
        self._specs: dict[str, NodeSpec] = {}
        self.pack_errors: dict[str, str] = {}
        self._comfy: list[tuple[str, ComfyMappings]] = []
        # Subgraph components available to every workflow (``subgraphs/*.json``), by id.
        self.subgraphs: dict[str, SubgraphDef] = {}
        self.subgraph_errors: dict[str, str] = {}  # file -> why it was not loaded

    # -- registration -----------------------------------------------------------------
    def add(self, spec: NodeSpec, pack: str = "") -> NodeSpec:
        """Register one node type (checked again against this registry's types)."""
        if not isinstance(spec, NodeSpec):
            raise SpecError(f"pack {pack!r}: expected a NodeSpec, got {type(spec).__name__} ({spec!r})")
        if pack and not spec.pack:
            spec = replace(spec, pack=pack)
        check_spec(spec, known_types=lambda t: t in self.types)
        existing = self._specs.get(spec.type_id)
        if existing is not None and existing is not spec and existing.fn is not spec.fn:
            raise SpecError(
                f"node type {spec.type_id!r} from pack {spec.pack!r} is already registered by pack "
                f"{existing.pack!r}; node type ids must be unique (prefix them with the pack name)"
            )
        self._specs[spec.type_id] = spec
        return spec

    def add_pack(self, name: str, specs: Iterable[NodeSpec], *, comfy: ComfyMappings | None = None) -> None:
        """Register every spec of a pack under ``name`` -- all or nothing, so a pack that
        fails half-way (recorded in ``pack_errors``) leaves no half-registered nodes behind.

        ``comfy`` says how the pack's node types correspond to ComfyUI classes
        (:class:`nodegraph.comfy.ComfyMappings`); it is checked against the specs just
        registered (input and output names) and against other packs' ComfyUI classes."""
        before = dict(self._specs)
        try:
            for spec in specs:
                self.add(spec, pack=name)
            if comfy is not None:
                self._add_comfy(name, comfy)
        except BaseException:
            self._specs = before
            raise

    def _add_comfy(self, pack: str, comfy: ComfyMappings) -> None:
        from .comfy.mapping import ComfyMappings, ComfyTable

        if not isinstance(comfy, ComfyMappings):
            raise SpecError(f"pack {pack!r}: comfy= expects a nodegraph.comfy.ComfyMappings, got "
                            f"{type(comfy).__name__}")
        comfy.check(self, pack)
        ComfyTable.merge([*self._comfy, (pack, comfy)])  # raises if a ComfyUI class is mapped twice
        self._comfy.append((pack, comfy))

    def comfy_mappings(self) -> list[tuple[str, ComfyMappings]]:
        """``(pack, mappings)`` of every registered pack that supports ComfyUI, in registration order
        (see :meth:`nodegraph.comfy.ComfyTable.of`)."""
        return list(self._comfy)

    def load_pack(self, register: PackRegisterFn) -> None:
        register(self)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP, *, strict: bool = False) -> None:
        """Load every installed pack.  A broken third-party pack is recorded in
        ``pack_errors`` (and logged) rather than taking the whole app down,
        unless ``strict``."""
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                ep.load()(self)
            except Exception as exc:
                if strict:
                    raise
                msg = f"{type(exc).__name__}: {exc}"
                self.pack_errors[ep.name] = msg
                log.error("node pack %r failed to load: %s", ep.name, msg)

    @classmethod
    def with_installed_packs(cls, *, strict: bool = False) -> Registry:
        """A registry holding every pack installed in this environment."""
        reg = cls()
        reg.load_entry_points(strict=strict)
        return reg

    def add_subgraph(self, definition: SubgraphDef) -> None:
        """Offer a subgraph component to every workflow (a workflow's own definition of the
        same id wins).  Listed in the catalogue as node type ``subgraph:<id>``."""
        definition.check()
        self.subgraphs[definition.id] = definition

    def load_subgraph_folder(self, folder: str | os.PathLike[str]) -> int:
        """Register every component file (``*.json``) of ``folder``; returns how many were
        loaded.  A broken file is recorded in ``subgraph_errors`` and skipped, like a broken pack."""
        from .errors import WorkflowFileError
        from .workflow import load_subgraph_file

        count = 0
        for path in sorted(Path(folder).glob("*.json")):
            try:
                definitions = load_subgraph_file(path)
            except WorkflowFileError as exc:
                self.subgraph_errors[str(path)] = str(exc)
                log.error("subgraph component %s not loaded: %s", path, exc)
                continue
            main, *nested = definitions
            self.add_subgraph(main)
            for d in nested:  # dependencies shipped inside the file; a component file of its own wins
                self.subgraphs.setdefault(d.id, d)
            count += 1
        return count

    def load_default_subgraphs(self, workflow: str | os.PathLike[str] | None = None) -> None:
        """Component folders a user expects to be found without configuration: every folder
        in ``$NODEGRAPH_SUBGRAPHS_DIR`` (``os.pathsep``-separated), ``./subgraphs``, and for a
        workflow at ``X/workflows/w.json`` the ``X/subgraphs`` folder next to ``workflows/``
        (also ``X/workflows/subgraphs``).  The first folder that defines an id wins."""
        folders = [Path(p) for p in os.environ.get("NODEGRAPH_SUBGRAPHS_DIR", "").split(os.pathsep) if p]
        folders.append(Path("subgraphs"))
        if workflow is not None:
            here = Path(workflow).resolve().parent
            folders += [here.parent / "subgraphs", here / "subgraphs"]
        seen: set[Path] = set()
        for folder in folders:
            key = folder.resolve()
            if key in seen or not folder.is_dir():
                continue
            seen.add(key)
            before = dict(self.subgraphs)
            self.load_subgraph_folder(folder)
            self.subgraphs.update(before)  # earlier folders win

    def subgraph_specs(self) -> list[NodeSpec]:
        """Interface specs of the component library (how the catalogue and node search list them)."""
        return sorted((d.node_spec() for d in self.subgraphs.values()), key=lambda s: (s.category, s.type_id))

    # -- lookup -----------------------------------------------------------------------
    def get(self, type_id: str) -> NodeSpec | None:
        return self._specs.get(type_id)

    def __getitem__(self, type_id: str) -> NodeSpec:
        return self._specs[type_id]

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._specs

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: (s.category, s.type_id)))

    def __len__(self) -> int:
        return len(self._specs)

    def categories(self) -> dict[str, list[NodeSpec]]:
        out: dict[str, list[NodeSpec]] = {}
        for spec in [*self, *self.subgraph_specs()]:
            out.setdefault(spec.category, []).append(spec)
        return out

    def catalogue(self, settings: Mapping[str, Any] | None = None) -> list[dict]:
        """Full JSON-able specs of every node (``nodegraph nodes --json``)."""
        return [spec.to_dict(settings) for spec in [*self, *self.subgraph_specs()]]
