"""Test-only node types and graph builders shared by the engine tests.

The nodes record every real invocation in ``ctx.settings["calls"]`` (the
executor's ``settings`` mapping), so a test can tell "the function ran" from
"the report says executed" without any module-level mutable state.  Failure is
driven by ``ctx.settings["fail"]`` — deliberately *not* part of the cache key —
so a test can make a node fail once and then succeed with identical inputs.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nodegraph import Executor, Float, Graph, In, Int, NodeResult, Out, Registry, String, node
from nodegraph.errors import NodeInputError
from nodes import primitives


def _log(ctx: Any) -> None:
    calls = ctx.settings.get("calls")
    if calls is not None:
        calls.append(ctx.node_id)


@node("t.const", category="test", inputs=[Int("value", 0, min=-1000, max=1000)], outputs=[Out("INT", "INT")])
def const(ctx: Any, value: int) -> int:
    _log(ctx)
    return value


@node("t.add", category="test", inputs=[Int("a", 0), Int("b", 0)], outputs=[Out("INT", "INT")])
def add(ctx: Any, a: int, b: int) -> int:
    _log(ctx)
    return a + b


@node("t.sink", category="test", inputs=[In("value", "*")], output_node=True)
def sink(ctx: Any, value: Any) -> NodeResult:
    _log(ctx)
    return NodeResult(ui={"value": value})


@node("t.opt", category="test", inputs=[In("x", "INT", optional=True), Int("fallback", -1)],
      outputs=[Out("INT", "INT")])
def opt(ctx: Any, fallback: int, x: int | None = None) -> int:
    _log(ctx)
    return fallback if x is None else x


@node("t.fail", category="test", inputs=[In("x", "INT"), Int("value", 0)], outputs=[Out("INT", "INT")])
def fail(ctx: Any, x: int, value: int) -> int:
    _log(ctx)
    if ctx.settings.get("fail"):
        raise NodeInputError("value", "told to fail", "clear the fail flag")
    return x + value


@node("t.boom", category="test", inputs=[In("x", "INT")], outputs=[Out("INT", "INT")])
def boom(ctx: Any, x: int) -> int:
    _log(ctx)
    raise RuntimeError("kaboom from inside the node")


@node("t.steps", category="test", inputs=[In("x", "INT"), Int("steps", 4, min=1, max=100)],
      outputs=[Out("INT", "INT")])
def steps(ctx: Any, x: int, steps: int) -> int:
    """A long node: reports progress (and so checks cancellation) every step."""
    _log(ctx)
    for i in range(1, steps + 1):
        ctx.progress(i, steps, preview=np.full((2, 2, 3), i, dtype=np.uint8))
    return x + steps


@node("t.wait", category="test", inputs=[In("x", "INT"), Int("max_steps", 400, min=1, max=10_000)],
      outputs=[Out("INT", "INT")])
def wait(ctx: Any, x: int, max_steps: int) -> int:
    """Runs for up to ``max_steps`` x 5 ms, checking cancellation each step; sets ``settings["started"]``."""
    _log(ctx)
    started = ctx.settings.get("started")
    for i in range(max_steps):
        if started is not None:
            started.set()
        ctx.progress(i + 1, max_steps)
        time.sleep(0.005)
    return x


_counter = itertools.count(1000)


@node("t.random", category="test", outputs=[Out("INT", "INT")], deterministic=False)
def rand(ctx: Any) -> int:
    _log(ctx)
    return next(_counter)


@node("t.big", category="test", inputs=[Int("seed", 0), Int("kbytes", 100, min=1, max=100_000)],
      outputs=[Out("array", "ARRAY")])
def big(ctx: Any, seed: int, kbytes: int) -> np.ndarray:
    """``kbytes`` kB of float64, filled with ``seed``."""
    _log(ctx)
    return np.full(kbytes * 1000 // 8, float(seed), dtype=np.float64)


def _file_fingerprint(values: Mapping[str, Any]) -> str:
    p = Path(values["path"])
    if not p.is_file():
        raise NodeInputError("path", f"file {str(p)!r} does not exist", "pick an existing file")
    return hashlib.sha256(p.read_bytes()).hexdigest()


@node("t.read", category="test", inputs=[String("path", "")], outputs=[Out("STRING", "STRING")],
      fingerprint=_file_fingerprint)
def read(ctx: Any, path: str) -> str:
    _log(ctx)
    return Path(path).read_text()


@node("t.image", category="test", inputs=[Int("size", 2, min=1, max=64)], outputs=[Out("IMAGE", "IMAGE")])
def image(ctx: Any, size: int) -> tuple[str, int]:
    _log(ctx)
    return ("image", size)


@node("t.filter", category="test",
      inputs=[In("mask", "MASK", optional=True), In("image", "IMAGE"), Float("strength", 0.5, min=0.0, max=1.0)],
      outputs=[Out("IMAGE", "IMAGE")])
def filt(ctx: Any, image: Any, strength: float, mask: Any = None) -> tuple[str, Any, float]:
    _log(ctx)
    return ("filtered", image, strength)


@node("t.to_mask", category="test", inputs=[In("image", "IMAGE")], outputs=[Out("MASK", "MASK")])
def to_mask(ctx: Any, image: Any) -> tuple[str, Any]:
    _log(ctx)
    return ("mask", image)


@node("t.two", category="test", inputs=[Int("value", 1)], outputs=[Out("double", "INT"), Out("triple", "INT")])
def two(ctx: Any, value: int) -> dict[str, int]:
    _log(ctx)
    return {"triple": 3 * value, "double": 2 * value}


TEST_NODES = [const, add, sink, opt, fail, boom, steps, wait, rand, big, read, image, filt, to_mask, two]


def make_registry(*, with_primitives: bool = True) -> Registry:
    """A fresh registry: the test pack (plus the primitive pack unless told otherwise)."""
    reg = Registry()
    reg.types.register_type("ARRAY", "#123456", "numpy array (tests)")
    reg.add_pack("test", TEST_NODES)
    if with_primitives:
        primitives.register(reg)
    return reg


def make_executor(tmp_path: Path, registry: Registry | None = None, **kwargs: Any) -> Executor:
    """An executor on CPU writing into ``tmp_path/out`` that logs node calls in ``settings["calls"]``."""
    settings = {"calls": []}
    settings.update(kwargs.pop("settings", {}))
    return Executor(registry or make_registry(), device="cpu", output_dir=tmp_path / "out", settings=settings,
                    **kwargs)


def calls(executor: Executor) -> list[str]:
    """Node ids whose function actually ran, in call order, since the last :func:`reset_calls`."""
    return list(executor.settings["calls"])


def reset_calls(executor: Executor) -> None:
    executor.settings["calls"].clear()


def chain(n: int, *, prefix: str = "n") -> Graph:
    """``const -> add(+1) x (n-2) -> sink``: ``n`` nodes whose sink receives ``n - 2``."""
    g = Graph()
    g.add_node("t.const", {"value": 0}, id=f"{prefix}0")
    for i in range(1, n - 1):
        g.add_node("t.add", {"b": 1}, id=f"{prefix}{i}")
        g.connect(f"{prefix}{i - 1}", "INT", f"{prefix}{i}", "a")
    g.add_node("t.sink", id=f"{prefix}out")
    g.connect(f"{prefix}{n - 2}", "INT", f"{prefix}out", "value")
    return g


def diamond() -> Graph:
    """``c1 -> a (c1+c2) -> s1`` and ``c2 -> b (c2+10) -> s2``, with ``c2`` shared."""
    g = Graph()
    g.add_node("t.const", {"value": 1}, id="c1")
    g.add_node("t.const", {"value": 2}, id="c2")
    g.add_node("t.add", id="a")
    g.add_node("t.add", {"b": 10}, id="b")
    g.add_node("t.sink", id="s1")
    g.add_node("t.sink", id="s2")
    g.connect("c1", "INT", "a", "a")
    g.connect("c2", "INT", "a", "b")
    g.connect("c2", "INT", "b", "a")
    g.connect("a", "INT", "s1", "value")
    g.connect("b", "INT", "s2", "value")
    return g
