"""Seed control after a run (fixed / increment / decrement / randomize), as in
ComfyUI: the choice lives in ``node.ui["seed_control"]`` (``{input name: mode}``)
and is applied to the *editor's* graph as soon as a run has taken its snapshot,
as one undo step, so the next run uses a new seed while the queued one keeps
the seed it was started with (and stays reproducible from its saved workflow)."""

from __future__ import annotations

import random
from typing import Any

from nodegraph import Graph, Registry, Widget
from nodegraph.spec import SEED_MAX


def next_seeds(graph: Graph, registry: Registry, rng: random.Random | None = None) -> list[tuple[str, str, int]]:
    """(node id, input, new value) for every seed whose control is not "fixed"."""
    rng = rng or random.Random()
    out: list[tuple[str, str, int]] = []
    for node in graph:
        ctl: Any = node.ui.get("seed_control")
        if not isinstance(ctl, dict) or node.mode != "normal":
            continue
        spec = registry.get(node.type)
        if spec is None:
            continue
        for name, mode in ctl.items():
            inp = spec.input(name)
            if inp is None or inp.widget is not Widget.SEED or graph.link_into(node.id, name) is not None:
                continue
            cur = node.values.get(name, inp.default)
            try:
                cur = int(cur)
            except (TypeError, ValueError):
                cur = 0
            hi = int(inp.max) if inp.max is not None else SEED_MAX
            if mode == "increment":
                new = cur + 1 if cur < hi else 0
            elif mode == "decrement":
                new = cur - 1 if cur > 0 else hi
            elif mode == "randomize":
                new = rng.randint(0, min(hi, 2**53))
            else:
                continue
            out.append((node.id, name, new))
    return out
