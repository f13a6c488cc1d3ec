"""Result cache shared across runs: content-addressed, LRU, bounded by bytes.

Keys come from :mod:`nodegraph.plan` (a hash of node type, version, constants,
fingerprint and upstream keys), so they do not depend on node ids or on which
run produced them.  Keeping many entries (not just the last run's) is what
makes "change a value and change it back" free.  Sizes are counted from the
data actually held — tensors, arrays, images, modules — so a budget in bytes
means something.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CacheEntry:
    """What a node produced: its outputs (in declaration order), display data and files."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    nbytes: int = 0


def sizeof(obj: Any, _seen: set[int] | None = None) -> int:
    """Approximate bytes held by ``obj``.

    Duck-typed so the engine needs no torch/numpy import: torch tensors
    (``element_size``/``nelement``), numpy arrays (``nbytes``), PIL images,
    torch modules (parameters + buffers) and objects that declare
    ``__nodegraph_nbytes__()``.  Shared objects are counted once.
    """
    seen = _seen if _seen is not None else set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if o is None or isinstance(o, (bool, int, float)):
            continue
        oid = id(o)
        if oid in seen:
            continue
        seen.add(oid)
        custom = getattr(o, "__nodegraph_nbytes__", None)
        if callable(custom) and not isinstance(o, type):
            total += int(custom())
            continue
        if hasattr(o, "element_size") and hasattr(o, "nelement"):  # torch.Tensor
            try:
                total += int(o.element_size()) * int(o.nelement())
                continue
            except Exception:
                pass
        if hasattr(o, "nbytes") and hasattr(o, "dtype"):  # numpy array
            total += int(o.nbytes)
            continue
        if hasattr(o, "parameters") and hasattr(o, "buffers") and callable(o.parameters):  # nn.Module
            stack.extend(o.parameters())
            stack.extend(o.buffers())
            continue
        if hasattr(o, "getbands") and hasattr(o, "size"):  # PIL image
            w, h = o.size
            total += w * h * len(o.getbands())
            continue
        if isinstance(o, (str, bytes, bytearray)):
            total += sys.getsizeof(o)
            continue
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
            total += sys.getsizeof(o)
            continue
        if isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
            total += sys.getsizeof(o)
            continue
        d = getattr(o, "__dict__", None)
        if isinstance(d, dict):
            stack.extend(d.values())
        total += sys.getsizeof(o)
    return total


# What holding one entry costs beyond the data sizeof() counts: the CacheEntry and its containers, the
# hex key, the LRU slot and the C++ headers of its tensors.  Measured with tracemalloc and RSS over 1,000
# demo runs (bench/long_run.py): ~2.3 KB per entry, which a budget that ignored it never saw.
ENTRY_OVERHEAD = 2048


def entry_nbytes(entry: CacheEntry) -> int:
    """Bytes an entry keeps alive: its outputs *and* its display data (a preview
    image in ``ui`` is as real as an output tensor for the RAM budget), plus the
    fixed cost of keeping an entry at all."""
    return sizeof((entry.outputs, entry.ui)) + ENTRY_OVERHEAD


class ResultCache:
    """LRU over :class:`CacheEntry` values with a RAM budget in bytes.

    An entry larger than the whole budget is not stored (the current run still
    uses it).  Thread-safe: the GUI reads statistics while a worker runs.
    """

    def __init__(self, budget_bytes: int = 8 * 1024**3) -> None:
        if budget_bytes < 0:
            raise ValueError("cache budget must be >= 0 bytes")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, entry: CacheEntry) -> bool:
        """Store ``entry``; returns False if it alone exceeds the budget."""
        if not entry.nbytes:
            entry.nbytes = entry_nbytes(entry)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.budget_bytes:
                return False
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.budget_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1
            return True

    def set_budget(self, budget_bytes: int) -> None:
        """Change the budget (a setting changed between runs); least recently used entries
        go at once if the cache is now over it."""
        if budget_bytes < 0:
            raise ValueError("cache budget must be >= 0 bytes")
        with self._lock:
            self.budget_bytes = budget_bytes
            while self._bytes > self.budget_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> Iterator[str]:
        """Keys from least to most recently used (a snapshot: safe while a run adds entries)."""
        with self._lock:
            return iter(list(self._entries))
