"""The primitive nodes.  Each is a small pure function; see their docstrings."""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from typing import Any

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.fileio import atomic_write_text
from nodegraph.outputs import confined_path, prefix_preflight
from nodegraph.spec import PATH_WRITE, Bool, Combo, Float, In, Int, NodeResult, Out, Seed, String, node
from nodegraph.types import ANY

from . import estimates as est

# -- constants ---------------------------------------------------------------------------------


@node("primitives.int", category="primitives", display_name="Integer",
      inputs=[Int("value", 0)], outputs=[Out("INT", "INT")], preflight=est.int_constant)
def int_const(ctx: NodeContext, value: int) -> int:
    """An integer constant, to feed the same number into several nodes."""
    return value


@node("primitives.float", category="primitives", display_name="Float",
      inputs=[Float("value", 0.0)], outputs=[Out("FLOAT", "FLOAT")])
def float_const(ctx: NodeContext, value: float) -> float:
    """A floating-point constant."""
    return value


@node("primitives.string", category="primitives", display_name="Text",
      inputs=[String("value", "", multiline=True)], outputs=[Out("STRING", "STRING")], preflight=est.text_constant)
def string_const(ctx: NodeContext, value: str) -> str:
    """A text constant (e.g. one prompt shared by several encoders)."""
    return value


@node("primitives.bool", category="primitives", display_name="Boolean",
      inputs=[Bool("value", False)], outputs=[Out("BOOLEAN", "BOOLEAN")])
def bool_const(ctx: NodeContext, value: bool) -> bool:
    """A true/false constant."""
    return value


@node("primitives.seed", category="primitives", display_name="Seed",
      inputs=[Seed("seed", 0)], outputs=[Out("seed", "INT")], preflight=est.int_constant)
def seed_const(ctx: NodeContext, seed: int) -> int:
    """A seed shared by several samplers; the editor can increment/randomize it after each run."""
    return seed


@node("primitives.random_int", category="primitives", display_name="Random Integer",
      inputs=[Int("low", 0), Int("high", 100)], outputs=[Out("INT", "INT")], deterministic=False)
def random_int(ctx: NodeContext, low: int, high: int) -> int:
    """A fresh random integer every run (never cached, so everything downstream re-runs)."""
    if high < low:
        raise NodeInputError("high", f"high ({high}) is below low ({low})", "make high >= low")
    return random.randint(low, high)


# -- arithmetic ---------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "floor_divide": operator.floordiv,
    "modulo": operator.mod,
    "power": operator.pow,
    "min": min,
    "max": max,
}


def _apply(op: str, a: Any, b: Any) -> Any:
    if op in ("divide", "floor_divide", "modulo") and b == 0:
        raise NodeInputError("b", f"{op} by zero", "give b a non-zero value")
    return _BINARY[op](a, b)


@node("primitives.int_math", category="primitives/math", display_name="Integer Math",
      inputs=[Int("a", 0), Int("b", 0), Combo("op", [k for k in _BINARY if k != "divide"], "add")],
      outputs=[Out("INT", "INT")], preflight=est.int_math)
def int_math(ctx: NodeContext, a: int, b: int, op: str) -> int:
    """a (op) b on integers; division rounds down so the result stays an integer."""
    if op == "power" and b < 0:
        raise NodeInputError("b", "negative power of an integer is not an integer", "use Float Math")
    if op == "power" and abs(a) > 1 and b * max(abs(a), 2).bit_length() > 1_000_000:
        # A workflow file is untrusted input: 10**10**9 would hang the run, not fail it.
        raise NodeInputError("b", f"{a} ** {b} has more than a million bits", "use a smaller exponent")
    return int(_apply(op, a, b))


@node("primitives.float_math", category="primitives/math", display_name="Float Math",
      inputs=[Float("a", 0.0), Float("b", 0.0), Combo("op", list(_BINARY), "add")],
      outputs=[Out("FLOAT", "FLOAT")])
def float_math(ctx: NodeContext, a: float, b: float, op: str) -> float:
    """a (op) b on floats."""
    try:
        result = _apply(op, a, b)
    except OverflowError:
        result = math.inf
    # A negative base to a fractional power is complex in Python: not a real number either.
    if isinstance(result, complex) or not math.isfinite(result):
        raise NodeInputError("b", f"{a} {op} {b} is not a finite real number", "change a or b")
    return float(result)


@node("primitives.int_to_float", category="primitives/convert", display_name="Int to Float",
      inputs=[Int("value", 0)], outputs=[Out("FLOAT", "FLOAT")])
def int_to_float(ctx: NodeContext, value: int) -> float:
    """Explicit conversion: the type rule never converts numbers silently."""
    return float(value)


@node("primitives.float_to_int", category="primitives/convert", display_name="Float to Int",
      inputs=[Float("value", 0.0), Combo("rounding", ["round", "floor", "ceil", "truncate"], "round")],
      outputs=[Out("INT", "INT")])
def float_to_int(ctx: NodeContext, value: float, rounding: str) -> int:
    """Explicit conversion with a chosen rounding rule."""
    fn = {"round": round, "floor": math.floor, "ceil": math.ceil, "truncate": math.trunc}[rounding]
    return int(fn(value))


@node("primitives.compare", category="primitives/math", display_name="Compare",
      inputs=[Float("a", 0.0), Float("b", 0.0), Combo("op", ["<", "<=", "==", "!=", ">=", ">"], "<")],
      outputs=[Out("BOOLEAN", "BOOLEAN")])
def compare(ctx: NodeContext, a: float, b: float, op: str) -> bool:
    """Compare two numbers."""
    return {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
            ">=": operator.ge, ">": operator.gt}[op](a, b)


# -- text ----------------------------------------------------------------------------------------


@node("primitives.concat", category="primitives/text", display_name="Join Text",
      inputs=[String("a", ""), String("b", ""), String("separator", " ")],
      outputs=[Out("STRING", "STRING")], preflight=est.concat)
def concat(ctx: NodeContext, a: str, b: str, separator: str) -> str:
    """Join two texts (e.g. a subject and a style) with a separator; empty parts are skipped."""
    return separator.join(p for p in (a, b) if p)


@node("primitives.replace", category="primitives/text", display_name="Replace Text",
      inputs=[String("text", ""), String("find", ""), String("replace", "")],
      outputs=[Out("STRING", "STRING")], preflight=est.replace)
def replace_text(ctx: NodeContext, text: str, find: str, replace: str) -> str:
    """Replace every occurrence of ``find``."""
    if not find:
        return text
    return text.replace(find, replace)


@node("primitives.case", category="primitives/text", display_name="Text Case",
      inputs=[String("text", ""), Combo("case", ["lower", "upper", "title"], "lower")],
      outputs=[Out("STRING", "STRING")])
def text_case(ctx: NodeContext, text: str, case: str) -> str:
    """Change letter case."""
    return {"lower": str.lower, "upper": str.upper, "title": str.title}[case](text)


@node("primitives.to_string", category="primitives/text", display_name="To Text",
      inputs=[In("value", ANY)], outputs=[Out("STRING", "STRING")], preflight=est.to_string)
def to_string(ctx: NodeContext, value: Any) -> str:
    """Any value as text (for file names, captions, debugging)."""
    return str(value)


@node("primitives.reroute", category="utils", display_name="Reroute",
      inputs=[In("input", ANY)], outputs=[Out("output", ANY)], preflight=est.passthrough)
def reroute(ctx: NodeContext, input: Any) -> Any:
    """Pass a value through unchanged: a dot to tidy up long wires."""
    return input


# -- outputs -------------------------------------------------------------------------------------


@node("primitives.show", category="primitives/output", display_name="Show Value",
      inputs=[In("value", ANY)], output_node=True)
def show(ctx: NodeContext, value: Any) -> NodeResult:
    """Display a value on the node (and in the run report)."""
    return NodeResult(ui={"text": str(value)})


def _files_exist(entry: Any) -> bool:
    from pathlib import Path

    return all(Path(f).exists() for f in entry.files)


@node("primitives.save_text", category="primitives/output", display_name="Save Text",
      inputs=[In("text", "STRING"), String("filename_prefix", "text", path=PATH_WRITE)], output_node=True,
      cache_valid=_files_exist, preflight=prefix_preflight())
def save_text(ctx: NodeContext, text: str, filename_prefix: str) -> NodeResult:
    """Write text to ``<output>/<prefix>_NNNNN.txt`` (atomically, inside the output folder).

    Cached like any node: re-running unchanged does not write a duplicate file,
    unless the file it wrote was deleted."""
    path = confined_path(ctx.output_dir, filename_prefix, ".txt")
    atomic_write_text(path, text)
    return NodeResult(ui={"text": text, "files": [str(path)]}, files=[str(path)])


NODES = [
    int_const, float_const, string_const, bool_const, seed_const, random_int,
    int_math, float_math, int_to_float, float_to_int, compare,
    concat, replace_text, text_case, to_string, reroute,
    show, save_text,
]
