"""Atomic file writes.

Everything the app writes (workflows, autosaves, reports, images) goes through
here: data goes to a temporary file in the same directory, is flushed and
fsynced, then renamed over the target.  A crash or kill at any moment leaves
either the old file or the new one, never a truncated mix; the temp file such a
kill leaves behind is deleted by the next write of the same file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the final path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates 0600; without this every save would make the file private.
        os.chmod(tmp, _mode_for(target))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


# A temp file of the old naming (no pid) is only removed once surely abandoned.
_LEGACY_TEMP_AGE = 3600.0


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files earlier writes of ``target`` left behind (the writer was killed between
    creating the temp file and renaming it).  Temp names carry the writer's pid, so a file of a live
    writer — another process saving the same file right now — is kept.  Returns what was removed."""
    target = Path(target)
    removed = []
    head = f".{target.name}."
    try:  # plain name tests, not glob(): a glob compiles a regex per file name, and caches it
        with os.scandir(target.parent) as entries:
            candidates = [target.parent / e.name for e in entries
                          if e.name.startswith(head) and e.name.endswith(".tmp")]
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(target.name) + 2:-len(".tmp")]
        pid_text, _, rest = middle.partition(".")
        if rest and pid_text.isdigit():
            if int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
                continue
        else:
            try:
                if time.time() - tmp.stat().st_mtime < _LEGACY_TEMP_AGE:
                    continue
            except OSError:
                continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (owned by someone else), or we cannot tell: keep its file
    return True


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def _mode_for(target: Path) -> int:
    """Permissions the written file should get: those of the file it replaces, else
    what ``open()`` would create (0666 minus the umask)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting (briefly process-wide)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort; not all platforms allow it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unwritable_reason(path: str | os.PathLike[str], *, directory: bool) -> str | None:
    """Why ``path`` cannot be written, or ``None`` if it looks writable.

    ``directory=True`` asks about a folder that files will be created in (it may
    not exist yet: creating it must be possible); ``directory=False`` about one
    file written atomically (a temp file beside it, then a rename).  Nothing is
    created, so a command can refuse a bad ``-o``/``--report`` before any work
    instead of failing with an ``OSError`` after minutes of computing.
    """
    p = Path(path)
    try:
        if directory:
            if p.exists() and not p.is_dir():
                return "it is a file, not a folder"
            folder = p
        else:
            if p.is_dir():
                return "it is a folder, not a file name"
            folder = p.parent
        # The nearest part of the path that exists decides whether the rest can be created.
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{str(existing)!r} is a file, so no folder can be created inside it"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"the folder {str(existing)!r} is not writable (permission denied or a read-only file system)"
    except OSError as exc:  # e.g. a parent folder we may not even look into
        return exc.strerror or str(exc)
    return None
