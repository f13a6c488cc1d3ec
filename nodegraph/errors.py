"""Exception types the engine raises.  Each one carries enough structure for the
CLI, the GUI and the server to show *which node, which input, and what to do*."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class NodegraphError(Exception):
    """Base class of every error the engine raises on purpose."""


class SpecError(NodegraphError):
    """A node type's declaration is wrong.  Raised at import/registration time so
    a broken pack fails loudly before any workflow uses it."""


class WorkflowFileError(NodegraphError):
    """A workflow file cannot be read: not JSON, wrong structure, newer format."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


@dataclass(frozen=True)
class ValidationIssue:
    """One problem found before running.  ``fix`` tells the user what to do."""

    kind: str
    message: str
    fix: str
    node_id: str | None = None
    node_type: str | None = None
    input: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            where.append(f"node {self.node_id!r}")
        if self.node_type:
            where.append(f"({self.node_type})")
        if self.input:
            where.append(f"input {self.input!r}")
        prefix = " ".join(where)
        return f"{prefix}: {self.message} -> {self.fix}" if prefix else f"{self.message} -> {self.fix}"

    @property
    def path(self) -> str | None:
        """``outer/inner.input``: where the problem is, through subgraphs (inner nodes have path ids)."""
        if self.node_id is None:
            return None
        return f"{self.node_id}.{self.input}" if self.input else self.node_id

    def to_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "input": self.input,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }


class WorkflowInvalid(NodegraphError):
    """Validation found problems; *all* of them are in ``issues``."""

    def __init__(self, issues: Sequence[ValidationIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  - {i}" for i in self.issues)
        super().__init__(f"workflow is invalid ({len(self.issues)} problem(s)):\n{lines}")


class OverrideError(NodegraphError):
    """A ``NODE.INPUT=VALUE`` override names something that does not exist or a bad value."""


class Cancelled(NodegraphError):
    """Raised inside a node when the run's cancel token has been triggered."""


@dataclass
class NodeInputError(NodegraphError):
    """Raised by a node to blame one of its inputs (e.g. a model file that does
    not exist).  The executor reports the node id/type alongside it."""

    input: str
    message: str
    fix: str = ""
    details: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        text = f"input {self.input!r}: {self.message}"
        if self.fix:
            text += f" -> {self.fix}"
        return text
