"""A stand-in for :class:`nodegraph.context.NodeContext` for calling node functions directly.

Why one class: node functions read more of the context as packs grow (the device-memory manager
added ``services``, ``device``, ``workflow`` and ``stats``); one stand-in keeps every direct-call
test in step instead of each growing its own partial copy."""

from __future__ import annotations

from typing import Any


class FakeContext:
    """Settings, per-executor services and the compute device; logs, progress and statistics are
    recorded so a test can look at them."""

    def __init__(self, settings: dict[str, Any] | None = None, device: str = "cpu") -> None:
        self.settings: dict[str, Any] = dict(settings or {})
        self.services: dict[str, Any] = {}
        self.device = device
        self.workflow = None
        self.logs: list[str] = []
        self.previews: list[Any] = []
        self.published: dict[str, Any] = {}

    def stats(self, name: str, data: Any) -> None:
        self.published[name] = data

    def log(self, message: str) -> None:
        self.logs.append(message)

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        self.previews.append(preview)
