"""Graphs and helpers shared by the headless tests (batch, server, Ray)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodegraph import Graph, Int, NodeResult, Registry, String, node
from nodes import primitives


def text_graph(prefix: str = "result") -> Graph:
    """num(12) -> div (12 // b) -> to_string -> concat(a, b=tag) -> save_text; ``num`` plays the role
    of an expensive shared loader: its key never changes across a sweep of ``div.b``/``cat.b``."""
    g = Graph()
    g.add_node("primitives.int", {"value": 12}, id="num")
    g.add_node("primitives.int_math", {"b": 2, "op": "floor_divide"}, id="div")
    g.connect("num", "INT", "div", "a")
    g.add_node("primitives.to_string", id="txt")
    g.connect("div", "INT", "txt", "value")
    g.add_node("primitives.concat", {"b": "x", "separator": ":"}, id="cat")
    g.connect("txt", "STRING", "cat", "a")
    g.add_node("primitives.save_text", {"filename_prefix": prefix}, id="save")
    g.connect("cat", "STRING", "save", "text")
    return g


def primitives_registry() -> Registry:
    reg = Registry()
    reg.load_pack(primitives.register)
    return reg


@node("headless.slow", category="test", inputs=[Int("steps", 50, min=1, max=10_000), String("tag", "")],
      outputs=[], output_node=True)
def slow(ctx: Any, steps: int, tag: str) -> NodeResult:
    """Sleeps 20 ms per step, reporting progress (which is where a cancel takes effect)."""
    for i in range(steps):
        time.sleep(0.02)
        ctx.progress(i + 1, steps)
    return NodeResult(ui={"text": f"slept {steps}"})


def server_registry() -> Registry:
    reg = primitives_registry()
    reg.add_pack("headless_test", [slow])
    return reg


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every file except the manifest."""
    return {p.relative_to(directory).as_posix(): sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until truthy (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
