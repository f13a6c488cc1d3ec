"""A terminal progress bar fed by executor events (only drawn on a TTY)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .events import Event, NodeError, NodeFinished, NodeProgress, NodeStarted, NodeStats, RunFinished, RunStarted


class TerminalProgress:
    """One self-overwriting status line: overall node count, the node running and its steps."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.total = 0
        self.done = 0
        self.current = ""
        self.stats: dict[str, str] = {}  # last line per published statistic (e.g. memory), shown after the steps
        self._last_draw = 0.0

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, RunStarted):
            self.total, self.done = len(event.nodes), 0
        elif isinstance(event, NodeStarted):
            self.current = f"{event.node_id} ({event.node_type})"
            self._draw()
        elif isinstance(event, NodeProgress):
            self._draw(event.step, event.total)
        elif isinstance(event, NodeStats):
            self.stats[event.name] = event.line
        elif isinstance(event, NodeFinished) and event.status != "skipped":
            self.done += 1
            self.current = f"{event.node_id} {event.status}"
            self._draw(force=True)
        elif isinstance(event, NodeError):
            self._clear()
        elif isinstance(event, RunFinished):
            self._clear()

    def _draw(self, step: int = 0, total: int = 0, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.05 and step not in (0, total):
            return
        self._last_draw = now
        frac = self.done / self.total if self.total else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        steps = f" step {step}/{total}" if total else ""
        extra = "".join(f" | {name}: {text}" for name, text in self.stats.items() if text)
        line = f"[{bar}] {self.done}/{self.total} {self.current}{steps}{extra}"
        self.stream.write("\r" + line[:160].ljust(160))
        self.stream.flush()

    def _clear(self) -> None:
        self.stream.write("\r" + " " * 160 + "\r")
        self.stream.flush()
