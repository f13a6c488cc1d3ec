"""CPU threads for model work: how many intra-op threads per workload, and OpenMP's wait policy.

Why: torch's default is one intra-op thread per core, and its OpenMP workers spin-wait between parallel
regions. For a tiny model (the demo: a 4 M-parameter UNet on a 16x16 latent) each region is microseconds of
work, so extra threads buy nothing; and beside another busy torch process (two apps, a server plus a CLI run,
two Ray workers) the spinning threads take the cores the other process's threads are waiting for. Measured on
a 2-core AMD EPYC beside two such processes: the demo's 10-step sampler took 4.3-47 s with torch's default
threads and 0.9-1.2 s with one thread.

Policy:

* OpenMP wait policy PASSIVE (idle workers sleep), unless the user set ``OMP_WAIT_POLICY``. OpenMP reads it
  once, when torch loads it, so it is per process, not per workload: entry points call
  :func:`prefer_passive_wait` before importing torch. Sleeping costs a wake-up per parallel region, which is
  noise next to the milliseconds a big model's region takes.
* Intra-op threads per workload: one thread when a model call is small (``work`` below :data:`SMALL_WORK`,
  with ``work`` = parameters x spatial positions per call, a proxy for its multiply-adds), else every core
  this process may use.
* The user decides over both: ``settings["threads"]`` (``nodegraph run --threads N``, ``nodegraph gui
  --threads N``) over the environment variable ``NODEGRAPH_THREADS`` over the automatic choice; ``auto`` or
  ``0`` means automatic.

``torch.set_num_threads`` is process-wide: a node sets it for its model calls and restores it afterwards.

No torch import at module import time (the engine stays importable without torch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

ENV_VAR = "NODEGRAPH_THREADS"
SETTING = "threads"
# Parameters x positions per model call below which one thread is used. The demo UNet at its default size is
# 4.3e6 x 256 = 1.1e9 (one thread); SD1.5 at 512x512 is 8.6e8 x 4096 = 3.5e12 (all cores).
SMALL_WORK = 2e10


class ThreadsError(ValueError):
    """A thread count that is neither a positive integer nor ``auto``."""


def prefer_passive_wait() -> None:
    """Make idle OpenMP threads sleep instead of spinning, unless the user chose otherwise.

    Call before torch is imported (OpenMP reads the variable once, at load)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_threads(value: object, source: str = "threads") -> int | None:
    """``None`` for automatic (``None``, ``""``, ``"auto"``, ``0``), else a positive int; ``source`` names
    where the value came from in the error."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        n = -1
    if isinstance(value, bool) or n < 0:
        raise ThreadsError(f"{source}={value!r}: expected a positive number of threads or 'auto'")
    return n or None


def requested_threads(settings: Mapping[str, Any] | None = None) -> int | None:
    """The user's thread count: ``settings["threads"]``, else ``$NODEGRAPH_THREADS``, else ``None`` (auto)."""
    if settings is not None and settings.get(SETTING) not in (None, ""):
        return parse_threads(settings[SETTING], SETTING)
    return parse_threads(os.environ.get(ENV_VAR), ENV_VAR)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_for(work: float, settings: Mapping[str, Any] | None = None) -> int:
    """Intra-op threads for model calls of ``work`` (parameters x positions per call)."""
    requested = requested_threads(settings)
    if requested is not None:
        return requested
    return 1 if work < SMALL_WORK else available_cores()


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def workload_threads(work: float, settings: Mapping[str, Any] | None = None) -> Any:
    """Context manager: the threads :func:`threads_for` picks for ``work``, for the duration of the body."""
    return intra_op_threads(threads_for(work, settings))


def module_work(module: Any, positions: int) -> float:
    """``work`` of one call of a torch module over ``positions`` spatial positions (tokens, latent pixels)."""
    return float(sum(p.numel() for p in module.parameters())) * max(1, positions)


__all__ = [
    "ENV_VAR", "SETTING", "SMALL_WORK", "ThreadsError", "available_cores", "intra_op_threads", "module_work",
    "parse_threads", "prefer_passive_wait", "requested_threads", "threads_for", "workload_threads",
]
