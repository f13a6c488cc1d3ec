"""Give freed heap memory back to the operating system between runs.

A long-lived executor keeps small results (latents, images) in its cache while
each run allocates and frees megabytes of temporaries around them.  glibc's
allocator keeps the freed pages of its heap mapped (it only returns the top of
the heap by itself), so resident memory creeps up run after run although the
bytes in use do not: measured with ``bench/long_run.py``, ~0.35 MiB per demo run
with ~0.05 MiB of newly cached data.  ``malloc_trim(0)`` after a run hands the
free pages back (``madvise``), which keeps the heap's resident size flat.

Best effort and cheap (a few milliseconds for a few hundred MiB heap): a no-op
where glibc is not the C allocator (macOS, Windows, musl).

Which thread trims is decided by the caller (see ``Executor(trim_after_run=)``):
``malloc_trim`` itself is thread-safe in glibc (it locks each arena in turn), but
the editor calls it from its GUI thread once a run has finished rather than from
the run's worker thread, so a trim never overlaps a run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked_up = False
_lookup_lock = threading.Lock()


def _find_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` when this process uses glibc's allocator, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim_supported() -> bool:
    """Whether :func:`release_free_memory` can do anything on this platform."""
    global _trim, _looked_up
    if not _looked_up:
        with _lookup_lock:
            if not _looked_up:
                _trim = _find_trim()
                _looked_up = True
    return _trim is not None


def release_free_memory() -> bool:
    """Return unused heap pages to the OS (Linux/glibc).

    Returns True if a trim was performed (not whether any page was released:
    glibc reports that only loosely), False where unsupported.
    """
    if not trim_supported():
        return False
    assert _trim is not None
    _trim(0)
    return True


def physical_memory() -> int | None:
    """Total RAM of this machine in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def available_memory() -> int | None:
    """RAM available to new allocations now (Linux ``MemAvailable``), else the total, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return physical_memory()


# The result cache may use half the RAM available when the executor starts: enough to keep models and
# many results between runs, while the other half stays for the run itself (activations, decoding) and
# the rest of the machine.  A fixed 8 GiB was too much for an 8 GiB laptop and too little for a workstation.
DEFAULT_CACHE_FRACTION = 0.5
_MIN_CACHE = 256 * 1024**2
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


def default_cache_budget() -> int:
    """Bytes the result cache may hold by default: a fraction of the RAM available now."""
    available = available_memory() or 8 * 1024**3
    return max(_MIN_CACHE, int(available * DEFAULT_CACHE_FRACTION))


def parse_size(text: str | int) -> int:
    """``"4G"``, ``"512MiB"``, ``"1.5gb"``, ``"25%"`` (of the RAM available now) or plain bytes -> bytes.
    Raises ValueError with the accepted forms."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip().lower().replace(" ", "")
        try:
            if s.endswith("%"):
                pct = float(s[:-1])
                if not 0 <= pct <= 100:
                    raise ValueError
                value = int((available_memory() or 0) * pct / 100)
            else:
                number = s.rstrip("kmgtib")
                value = int(float(number) * _UNITS[s[len(number):]])
        except (ValueError, KeyError, OverflowError):
            raise ValueError(f"{text!r} is not a size; use e.g. 4G, 512M, 25% (of available RAM) or bytes") from None
    if value < 0:
        raise ValueError(f"{text!r}: a size cannot be negative; use e.g. 4G, 512M, 25% (of available RAM) or bytes")
    return value


#: Device-budget words besides sizes: ``auto`` = free VRAM minus a reserve; the others = no budget.
VRAM_WORDS = ("auto", "unlimited", "none", "off")


def check_vram_budget(text: str) -> str:
    """A device-memory budget as ``--vram-budget`` and the editor's Preferences take it: ``auto``,
    ``unlimited`` or a size (``4G``, ``50%`` of the device's memory), returned normalised.  Only the
    syntax is checked here (the engine manages no device); packs that do read
    ``settings["vram_budget"]``.  Raises ValueError naming the accepted forms."""
    word = text.strip().lower()
    if word in VRAM_WORDS:
        return word
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; or auto (free VRAM minus a reserve) or unlimited") from None
    if size <= 0:
        raise ValueError(f"{text!r}: a device budget must be more than 0 bytes; use e.g. 4G, 512M, 50%, "
                         "or auto (free VRAM minus a reserve) or unlimited")
    return text.strip()
