"""Reading workflow JSON strictly: a size cap and no duplicate keys.

Workflow files are shared and downloaded, so the reader refuses two things
``json.loads`` accepts silently:

* duplicate keys in one object — a reviewer reading the file (or a diff, or a
  web viewer) sees the first value, while Python keeps the last, so a file can
  show one thing and run another;
* files over :data:`MAX_WORKFLOW_BYTES` — parsing and validating cost memory
  and time in proportion (a 174 MB file took 36 s and 5 GiB), and no real
  workflow comes near the cap.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import WorkflowFileError

# 32 MiB: the largest real workflows (hundreds of nodes, subgraphs, notes) are a few MB, a PNG's
# text chunks are capped lower still; at 32 MiB loading and validating stays around a second and a
# few hundred MB, instead of the tens of seconds and GBs an unbounded file can cost.
MAX_WORKFLOW_BYTES = 32 * 1024 * 1024


class DuplicateKeyError(ValueError):
    """One JSON object names the same key twice; ``key`` is that key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"the key {key[:60]!r} appears twice in one object")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return out


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` on a repeated key (a ``ValueError``)."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


def duplicate_key_message(exc: DuplicateKeyError) -> str:
    """The user-facing error for a repeated key, with the fix."""
    return (f"{exc} (readers disagree on which value counts, so the file could show one thing and run "
            "another) -> keep one of them and delete the other")


def check_size(path: str | os.PathLike[str], limit: int = MAX_WORKFLOW_BYTES) -> None:
    """Refuse a file larger than ``limit`` before reading it (``WorkflowFileError`` naming the size)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # the read that follows reports it in its own words
    if size > limit:
        raise WorkflowFileError(
            f"the file is {size / 2**20:.0f} MiB, over the {limit // 2**20} MiB a workflow file may have -> "
            "this is not a workflow file, or it embeds large data (images, notes): remove that data",
            os.fspath(path))
