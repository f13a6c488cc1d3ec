"""Autosave and crash recovery.

While the document has unsaved changes, a timer writes it (atomically: temp
file + rename, so a crash mid-write never leaves a torn file) to a recovery
file.  A clean exit or a save deletes it; so if the recovery file exists at
start-up, the last session ended without saving and the user is offered the
graph back.  The file is a normal workflow with ``meta.recovery`` telling
which document it belonged to.

Several editors may run at once, so each instance writes its own file
(``autosave-<pid>-<random>.json`` beside the configured path) and holds an
exclusive lock on ``<file>.lock`` for its lifetime; the OS drops the lock when
the process dies.  At start-up every recovery file whose lock nobody holds is
an orphan of a crashed (or killed) editor: the newest is offered, and the others
stay on disk to be offered at the next starts, so no instance's work is lost
to another's clean exit or autosave.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QStandardPaths, QTimer

from nodegraph import Graph
from nodegraph.fileio import atomic_write_text
from nodegraph.workflow import loads, standard_json, to_dict


def default_recovery_path() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(base or Path.home() / ".nodegraph") / "recovery" / "autosave.json"


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class InstanceLock:
    """An exclusive lock on a file, held until :meth:`release` or process death (``flock``; where
    that is missing, the holder's pid written in the file and checked for liveness)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            if _pid_alive(_read_pid(self.path)):
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
        self._fd = fd
        return True

    def release(self, *, delete: bool = False) -> None:
        if self._fd is not None:
            if delete:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @staticmethod
    def held(path: Path) -> bool:
        """Whether a live process holds the lock at ``path``."""
        if not path.exists():
            return False
        probe = InstanceLock(path)
        if probe.acquire():
            probe.release()
            return False
        return True


def _read_pid(path: Path) -> int | None:  # pragma: no cover - Windows fallback
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int | None) -> bool:  # pragma: no cover - Windows fallback
    if pid is None or pid == os.getpid():
        return pid == os.getpid()
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class Autosaver(QObject):
    def __init__(self, path: Path | None = None, interval_ms: int = 30_000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.base = Path(path) if path is not None else default_recovery_path()
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.path = self.base.with_name(f"{self.base.stem}-{token}{self.base.suffix}")
        self.lock = InstanceLock(_lock_path(self.path))
        self.lock.acquire()
        self._offered: Path | None = None  # an orphan shown by pending(), not yet loaded or declined
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
        """Write this instance's recovery file if there is anything unsaved."""
        if self._graph is None or not self._dirty:
            return None
        doc = to_dict(self._graph)
        doc.setdefault("meta", {})["recovery"] = {"source": self._source, "saved_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, dumps_standard(doc))
        return self.path

    def discard(self) -> None:
        """Forget this instance's recovery file (after a save or a clean exit), and an orphan that was
        offered and declined."""
        self._dirty = False
        for path in (self.path, self._offered):
            if path is not None:
                _remove(path)
        self._offered = None

    def close(self) -> None:
        """A clean exit: no recovery file, and the lock released and removed."""
        self.discard()
        self.lock.release(delete=True)

    def orphans(self) -> list[Path]:
        """Recovery files of editors that are no longer running, newest first (stale locks cleaned)."""
        folder = self.base.parent
        if not folder.is_dir():
            return []
        found = [p for p in folder.glob(f"{glob_escape(self.base.stem)}-*{self.base.suffix}")
                 if p != self.path and p.is_file()]
        if self.base.is_file():
            found.append(self.base)  # one shared file, as older versions wrote
        alive = [p for p in found if InstanceLock.held(_lock_path(p))]
        for lock in folder.glob(f"{glob_escape(self.base.stem)}-*.lock"):
            if lock != self.lock.path and not lock.with_suffix("").exists() and not InstanceLock.held(lock):
                _remove(lock)  # a crashed editor that never autosaved
        return sorted((p for p in found if p not in alive), key=_mtime, reverse=True)

    def pending(self) -> dict[str, Any] | None:
        """Recovery info for the newest orphan, else None.  ``others`` counts the orphans left for the
        next start-ups."""
        for candidate in self.orphans():
            try:
                doc = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            info = (doc.get("meta") or {}).get("recovery") or {} if isinstance(doc, dict) else {}
            self._offered = candidate
            return {"source": info.get("source"), "saved_at": info.get("saved_at"), "path": str(candidate),
                    "others": len(self.orphans()) - 1}
        return None

    def load(self) -> tuple[Graph, str | None]:
        """The offered graph and the file it belonged to (None = untitled).  The orphan becomes this
        instance's recovery file (copied first, then removed), so a crash right after still keeps it."""
        source_path = self._offered or self.path
        text = source_path.read_text(encoding="utf-8")
        graph = loads(text, source=str(source_path))
        info = graph.meta.pop("recovery", None) or {}
        if self._offered is not None:
            atomic_write_text(self.path, text)
            _remove(self._offered)
            _remove(_lock_path(self._offered))
            self._offered = None
        return graph, info.get("source")


def dumps_standard(doc: dict[str, Any]) -> str:
    """Standard JSON (NaN/Infinity as null), like every workflow file nodegraph writes."""
    return json.dumps(standard_json(doc), indent=1, ensure_ascii=False, allow_nan=False)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
