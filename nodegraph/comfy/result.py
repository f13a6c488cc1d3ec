"""What an import returns, and the error it raises for unreadable documents."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import WorkflowFileError
from ..graph import Graph


class ComfyFormatError(WorkflowFileError):
    """The document is not a ComfyUI workflow we can read (wrong structure, not JSON…)."""


@dataclass
class ImportResult:
    """The imported graph plus everything the user should be told about the import.

    ``unmapped`` lists ``(node id, ComfyUI class_type)`` of nodes kept as
    placeholders; ``warnings`` are human-readable notes (dropped inputs,
    approximated values, folded frontend-only nodes…).  ``source`` is
    ``"comfy_ui"`` or ``"comfy_api"``.
    """

    graph: Graph
    unmapped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    def notes(self) -> list[str]:
        """One line per thing worth telling the user, unmapped nodes first."""
        kind = {"comfy_ui": "ComfyUI workflow", "comfy_api": "ComfyUI API prompt"}.get(self.source, "ComfyUI file")
        lines = [f"imported {kind}: {len(self.graph)} node(s), {len(self.unmapped)} without an equivalent"]
        lines += [f"node {nid!r} ({cls}) has no nodegraph equivalent; kept as a placeholder"
                  for nid, cls in self.unmapped]
        lines += self.warnings
        return lines
