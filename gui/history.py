"""Run history kept across sessions: a small JSON file in the user's data folder.

Each finished run is one entry: when, how it ended, how long it took (in total and
per node), the images it wrote and the exact workflow it ran (the snapshot the
worker executed, not the editor's current graph), so a picture can always be traced
back to, re-opened as, or re-run from what made it.

The store is bounded (newest :data:`MAX_ENTRIES` entries, and older ones dropped
while the file would exceed :data:`MAX_BYTES`) and written atomically (a temporary
file beside it, then a rename), so a crash mid-write leaves the previous history,
never half a file.  Reading and writing happen on one worker thread, in order: the
UI never waits for the disk.  A damaged file is set aside (``history.json.bad``) and
a fresh history started, rather than failing the editor's start-up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nodegraph import Graph
from nodegraph.fileio import atomic_write_text
from nodegraph.workflow import from_dict, to_dict

MAX_ENTRIES = 100
MAX_BYTES = 4_000_000
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
FORMAT = "nodegraph.history"


def default_path() -> Path:
    """``history.json`` in the platform's per-user data folder (Qt knows where that is)."""
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".nodegraph") / "history.json"


@dataclass
class HistoryEntry:
    """One finished run."""

    job_id: int
    finished_at: float
    status: str  # ok | error | cancelled | invalid
    seconds: float
    workflow: dict[str, Any]
    images: list[str] = field(default_factory=list)
    node_seconds: dict[str, float] = field(default_factory=dict)
    name: str = ""

    def graph(self) -> Graph:
        """A fresh graph of the workflow that ran (safe to edit or run)."""
        return from_dict(json.loads(json.dumps(self.workflow)))

    @classmethod
    def from_run(cls, job_id: int, graph: Graph, report: Any, name: str = "") -> HistoryEntry:
        """An entry for a run that ended with ``report`` (None: refused or failed before starting)."""
        if report is None:
            return cls(job_id, time.time(), "invalid", 0.0, to_dict(graph), name=name)
        images = [p for p in report.outputs if str(p).lower().endswith(IMAGE_EXTS)]
        timed = {nid: round(r.seconds, 4) for nid, r in report.nodes.items() if r.status == "executed"}
        return cls(job_id, time.time(), report.status, round(report.seconds, 4), to_dict(graph), images, timed, name)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HistoryEntry:
        return cls(int(d["job_id"]), float(d["finished_at"]), str(d["status"]), float(d["seconds"]),
                   dict(d["workflow"]), [str(p) for p in d.get("images", [])],
                   {str(k): float(v) for k, v in dict(d.get("node_seconds", {})).items()}, str(d.get("name", "")))


def bounded(entries: list[HistoryEntry]) -> tuple[list[HistoryEntry], str]:
    """The newest entries that fit the limits (newest first), and their JSON text."""
    kept = entries[:MAX_ENTRIES]
    while True:
        text = json.dumps({"format": FORMAT, "version": 1, "runs": [asdict(e) for e in kept]})
        if len(text.encode()) <= MAX_BYTES or len(kept) <= 1:
            return kept, text
        kept = kept[: max(1, len(kept) * 3 // 4)]


def read_history(path: Path) -> list[HistoryEntry]:
    """Entries newest first; a missing file is an empty history, a damaged one is set aside."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a nodegraph history file")
        return [HistoryEntry.from_json(d) for d in doc["runs"]][:MAX_ENTRIES]
    except (ValueError, KeyError, TypeError):
        os.replace(path, path.with_name(path.name + ".bad"))
        return []


class HistoryStore:
    """The history of one user, loaded and saved on a private worker thread.

    ``entries`` is the UI thread's copy (newest first); :meth:`add` and :meth:`clear`
    change it at once and queue a write of the whole (small, bounded) list."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: list[HistoryEntry] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodegraph-history")
        self._last_write: Future | None = None
        self._closed = False
        self.write_errors: list[str] = []

    def load(self, done: Callable[[list[HistoryEntry]], None]) -> Future:
        """Read the file on the worker; ``done(entries)`` is called there (post it to the UI)."""
        def work() -> list[HistoryEntry]:
            try:
                entries = read_history(self.path)
            except OSError as exc:
                self.write_errors.append(f"cannot read {self.path}: {exc.strerror or exc}")
                entries = []
            done(entries)
            return entries

        return self._io.submit(work)

    def merge_loaded(self, loaded: list[HistoryEntry]) -> None:
        """Put what was on disk behind the runs added since start-up."""
        added_meanwhile = bool(self.entries)
        self.entries, _ = bounded(self.entries + loaded)
        if added_meanwhile:
            self._save()

    def add(self, entry: HistoryEntry) -> None:
        self.entries, _ = bounded([entry, *self.entries])
        self._save()

    def remove(self, index: int) -> None:
        del self.entries[index]
        self._save()

    def clear(self) -> None:
        self.entries = []
        self._save()

    def _save(self) -> None:
        if self._closed:  # a run that ended after its window closed: nothing left to show it in
            return
        _, text = bounded(self.entries)

        def work() -> None:
            try:
                atomic_write_text(self.path, text)
            except OSError as exc:  # a full disk must not take the editor down
                self.write_errors.append(f"cannot write {self.path}: {exc.strerror or exc}")

        self._last_write = self._io.submit(work)

    def flush(self, timeout: float | None = 5.0) -> None:
        """Wait for queued writes (tests; the window's close does not block on this)."""
        if self._last_write is not None:
            self._last_write.result(timeout)

    def shutdown(self) -> None:
        """Stop taking writes; those already queued still complete (the worker thread is
        joined at interpreter exit), so the last run is not lost by closing the window."""
        self._closed = True
        self._io.shutdown(wait=False)
