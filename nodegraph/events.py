"""Events the executor emits while it runs.

Plain dataclasses with a ``kind`` tag and a JSON-friendly :meth:`to_dict`, so
the same stream feeds the CLI progress bar, the GUI (queued across threads),
the batch runner and a server's event stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Event:
    run_id: str

    @property
    def kind(self) -> str:
        return _KINDS[type(self)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: previews are left out and display data keeps only JSON values
        (a preview array in ``ui`` must not break a server's event stream).  Fields are
        read directly -- ``dataclasses.asdict`` would deep-copy every array."""
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "preview":
                continue
            value = getattr(self, f.name)
            if f.name == "ui" and isinstance(value, Mapping):
                value = json_safe(value)
            elif isinstance(value, tuple):
                value = list(value)
            d[f.name] = value
        d["kind"] = self.kind
        return d


def json_safe(ui: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``ui`` that survive ``json.dumps`` (arrays, images… are dropped)."""
    out = {}
    for k, v in ui.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


@dataclass(frozen=True)
class RunStarted(Event):
    nodes: tuple[str, ...] = ()  # planned node ids in execution order


@dataclass(frozen=True)
class NodeStarted(Event):
    node_id: str = ""
    node_type: str = ""


@dataclass(frozen=True)
class NodeProgress(Event):
    node_id: str = ""
    step: int = 0
    total: int = 0
    preview: Any = field(default=None, compare=False)  # e.g. an HxWx3 uint8 array


@dataclass(frozen=True)
class NodeFinished(Event):
    node_id: str = ""
    node_type: str = ""
    status: str = "executed"  # "executed" | "cached" | "skipped"
    seconds: float = 0.0
    ui: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class NodeError(Event):
    node_id: str = ""
    node_type: str = ""
    input: str | None = None
    message: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class NodeStats(Event):
    """A running node's figures for one named statistic (e.g. ``memory``: a pack's device-memory
    budget, resident, offloaded and peak bytes), JSON values plus a human ``line``.  The engine
    only passes them on: the last value of each name lands in :attr:`RunReport.stats`."""

    node_id: str = ""
    name: str = ""
    data: Any = field(default=None, compare=False)  # {"line": str, ...JSON values}

    @property
    def line(self) -> str:
        return str((self.data or {}).get("line", ""))


@dataclass(frozen=True)
class RunFinished(Event):
    status: str = "ok"  # "ok" | "error" | "cancelled"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_id": self.run_id, "status": self.status, "seconds": self.seconds}


_KINDS: dict[type, str] = {
    RunStarted: "run_started",
    NodeStarted: "node_started",
    NodeProgress: "node_progress",
    NodeFinished: "node_finished",
    NodeError: "node_error",
    NodeStats: "node_stats",
    RunFinished: "run_finished",
}

EventListener = Callable[[Event], None]
