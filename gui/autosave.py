"""Autosave and crash recovery.

While the document has unsaved changes, a timer writes it (atomically: temp
file + rename, so a crash mid-write never leaves a torn file) to a recovery
file.  A clean exit or a save deletes it; so if the recovery file exists at
start-up, the last session ended without saving and the user is offered the
graph back.  The file is a normal workflow with ``meta.recovery`` telling
which document it belonged to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QStandardPaths, QTimer

from nodegraph import Graph
from nodegraph.fileio import atomic_write_text
from nodegraph.workflow import loads, to_dict


def default_recovery_path() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(base or Path.home() / ".nodegraph") / "recovery" / "autosave.json"


class Autosaver(QObject):
    def __init__(self, path: Path | None = None, interval_ms: int = 30_000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = Path(path) if path is not None else default_recovery_path()
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self._graph: Graph | None = None
        self._source: str | None = None
        self._dirty = False
        self.timer.timeout.connect(self.save_now)
        self.timer.start()

    def track(self, graph: Graph, source: str | None) -> None:
        self._graph, self._source = graph, source
        self._dirty = False

    def mark_dirty(self, dirty: bool = True) -> None:
        self._dirty = dirty

    def save_now(self) -> Path | None:
        """Write the recovery file if there is anything unsaved."""
        if self._graph is None or not self._dirty:
            return None
        doc = to_dict(self._graph)
        doc.setdefault("meta", {})["recovery"] = {"source": self._source, "saved_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(doc, indent=1, ensure_ascii=False))
        return self.path

    def discard(self) -> None:
        """Forget the recovery file (after a save or a clean exit)."""
        self._dirty = False
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def pending(self) -> dict[str, Any] | None:
        """Recovery info if a previous session left unsaved work, else None."""
        if not self.path.is_file():
            return None
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        info = (doc.get("meta") or {}).get("recovery") or {}
        return {"source": info.get("source"), "saved_at": info.get("saved_at"), "path": str(self.path)}

    def load(self) -> tuple[Graph, str | None]:
        """The recovered graph and the file it belonged to (None = untitled)."""
        graph = loads(self.path.read_text(encoding="utf-8"), source=str(self.path))
        info = graph.meta.pop("recovery", None) or {}
        return graph, info.get("source")
