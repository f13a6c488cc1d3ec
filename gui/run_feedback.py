"""What a node says about its run, in its title bar: "12/20 · 4 s left" while it steps,
its own time ("1.3 s", or "cached") once the run has passed it.

Times come from the engine: steps from ``NodeProgress`` (timed here from the node's
``NodeStarted``), the per-node duration from ``NodeFinished.seconds``.  The ETA
assumes steps cost the same (true of samplers, whose steps all run the same model);
it is shown from the second step on, when one step's cost has been seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def format_seconds(s: float) -> str:
    """Short and stable: "0.04 s", "1.3 s", "42 s", "3 min 5 s"."""
    if s < 0.1:
        return f"{s:.2f} s"
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec} s" if m < 60 else f"{m // 60} h {m % 60} min"


def eta_seconds(elapsed: float, step: int, total: int) -> float | None:
    """Time left after ``step`` of ``total`` steps took ``elapsed`` seconds (None: unknown yet)."""
    if step < 1 or total <= step or elapsed <= 0:
        return None if total > step else 0.0
    return elapsed / step * (total - step)


# How a subgraph node's inner results combine: one inner node that ran makes it "executed".
_RANK = {"executed": 3, "cached": 2, "skipped": 1}


class NodeTimer:
    """Start times of running nodes, to turn progress into an ETA; and what a node shown on the
    canvas has finished so far (a subgraph node finishes once per inner node)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._started: dict[str, float] = {}
        self._finished: dict[str, tuple[str, float]] = {}

    def start(self, nid: str) -> None:
        self._started[nid] = self.clock()

    def clear(self) -> None:
        self._started.clear()
        self._finished.clear()

    def finish(self, nid: str, status: str, seconds: float) -> tuple[str, float]:
        """Add one finished engine node to the shown node ``nid``: (status, seconds) so far.

        A subgraph node's badge is the time of all its inner nodes, and it is "executed" if any of
        them ran -- not whatever its last inner node happened to be (often a cached decode)."""
        prev_status, prev_seconds = self._finished.get(nid, ("", 0.0))
        best = max(prev_status, status, key=lambda s: _RANK.get(s, 0)) if prev_status else status
        self._finished[nid] = (best, prev_seconds + seconds)
        return self._finished[nid]

    def progress_text(self, nid: str, step: int, total: int) -> str:
        """"step/total", plus the time left once it can be estimated."""
        text = f"{step}/{total}" if total else str(step)
        started = self._started.get(nid)
        if started is None or not total:
            return text
        left = eta_seconds(self.clock() - started, step, total)
        if left is None or step < 1 or step >= total:
            return text
        return f"{text} · {format_seconds(left)} left"

    @staticmethod
    def finished_text(status: str, seconds: float) -> str | None:
        if status == "executed":
            return format_seconds(seconds)
        if status == "cached":
            return "cached"
        return None
