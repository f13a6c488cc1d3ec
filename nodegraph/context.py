"""What a running node can see: its id, the device policy, where to write,
how to report progress, and whether the user asked to stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .device import DevicePolicy
from .errors import Cancelled


class CancelToken:
    """Cooperative cancellation, checked between nodes and inside long nodes
    (a sampler checks it every step).  Thread-safe; can be reused after
    :meth:`reset`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("run cancelled")


ProgressFn = Callable[[int, int, Any], None]


@dataclass
class NodeContext:
    """Passed as the first argument of every node function."""

    node_id: str
    node_type: str
    device_policy: DevicePolicy
    output_dir: Path
    cancel_token: CancelToken
    settings: Mapping[str, Any] = field(default_factory=dict)
    workflow: Mapping[str, Any] | None = None  # the workflow document, for embedding in outputs
    _progress: ProgressFn | None = None
    _log: Callable[[str], None] | None = None
    #: Objects a pack keeps for the life of the executor (one per executor, shared by its runs),
    #: under keys the pack chooses (e.g. a device-memory manager); the engine never looks inside.
    services: dict[str, Any] = field(default_factory=dict)
    _stats: Callable[[str, Mapping[str, Any]], None] | None = None

    @property
    def device(self) -> Any:
        """The torch device to compute on (torch is imported on first use)."""
        return self.device_policy.torch_device

    def check_cancelled(self) -> None:
        self.cancel_token.check()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report step ``step`` of ``total`` (optionally with a preview image) and
        stop here if the run was cancelled."""
        if self._progress is not None:
            self._progress(step, total, preview)
        self.cancel_token.check()

    def stats(self, name: str, data: Mapping[str, Any]) -> None:
        """Publish figures for statistic ``name`` (JSON values, with a human ``"line"``): an event for
        progress displays now, and the last value in the run report's ``stats``."""
        if self._stats is not None:
            self._stats(name, data)

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(f"[{self.node_id}] {message}")


__all__ = ["CancelToken", "Cancelled", "NodeContext"]
