"""Preflight estimates for the primitive nodes (see ``NodeSpec.preflight``).

Text and integers are the two values a workflow file can make grow without
bound: forty chained Join Text nodes fed their own output double a string to
2**40 bytes, thirty chained multiplications square an integer to 2**30 bits.
Each hook computes the size of its result from the sizes of its inputs (exact
constants where known), so planning refuses such a chain before it runs.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from nodegraph.errors import NodeInputError
from nodegraph.spec import Estimate

_INT_OVERHEAD = 28  # bytes of a small Python int object; a big one adds its digits
_KEEP_EXACT_BITS = 4096
# The most an integer may grow to: a million bits (301,030 digits) is far beyond any seed, size or
# count, and multiplying numbers this big already takes a noticeable time.
MAX_INT_BITS = 1_000_000
_EXACT_OPS = {"add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "power": operator.pow,
              "min": min, "max": max}  # compute exact integer results only while they are this small


def _text_bytes(name: str, values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> int | None:
    if name in values:
        return len(str(values[name]).encode("utf-8", "surrogatepass"))
    est = upstream.get(name)
    return est.bytes if est is not None else None


def text_constant(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate]:
    return {"STRING": Estimate(_text_bytes("value", values, upstream) or 0)}


def concat(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    sizes = [_text_bytes(n, values, upstream) for n in ("a", "b", "separator")]
    if any(s is None for s in sizes):
        return None
    return {"STRING": Estimate(sum(sizes), input="a",  # type: ignore[arg-type]
                               fix="this text doubles along a chain of Join Text nodes; shorten the chain")}


def replace(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    text, find, repl = (_text_bytes(n, values, upstream) for n in ("text", "find", "replace"))
    if text is None or find is None or repl is None:
        return None
    grown = text + (text // find) * max(0, repl - find) if find else text
    return {"STRING": Estimate(grown, input="replace", fix="use a shorter replacement text")}


def _int_bits(name: str, values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> tuple[int, Any]:
    """(bit length, exact value or None) of an integer input; bit length -1 when unknown."""
    if name in values:
        value = int(values[name])
        return value.bit_length(), value
    est = upstream.get(name)
    if est is None:
        return -1, None
    if est.shape:  # our own integer estimates carry the exact bit length
        return int(est.shape[0]), est.value
    return max(0, (est.bytes - _INT_OVERHEAD) * 8), est.value


def _int_estimate(bits: int, value: Any = None) -> Estimate:
    return Estimate(_INT_OVERHEAD + (bits + 7) // 8, shape=(bits,), value=value, input="b",
                    fix="the integer grows at every step of this chain; use smaller numbers or fewer steps")


def int_constant(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate]:
    name = next(iter(values), None)
    value = int(values[name]) if name is not None else 0
    return {out: _int_estimate(value.bit_length(), value) for out in ("INT", "seed")}


def int_math(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    (abits, a), (bbits, b) = _int_bits("a", values, upstream), _int_bits("b", values, upstream)
    op = values.get("op")
    if abits < 0 or bbits < 0 or not isinstance(op, str):
        return None
    if op == "power":
        if b is None:
            return None
        bits = abits * max(int(b), 0) if abs(a or 2) > 1 else 1
    elif op == "multiply":
        bits = abits + bbits
    elif op in ("add", "subtract"):
        bits = max(abits, bbits) + 1
    else:  # floor_divide, modulo, min, max never grow beyond their inputs
        bits = max(abits, bbits)
    if bits > MAX_INT_BITS:
        raise NodeInputError("b", f"the result would have about {bits:,} bits (this chain of Integer Math "
                             "nodes grows the number at every step)", "use smaller numbers or fewer steps")
    exact = None
    if a is not None and b is not None and bits <= _KEEP_EXACT_BITS and op in ("add", "subtract", "multiply",
                                                                                 "power", "min", "max"):
        if op != "power" or b >= 0:  # only the chosen operation: computing all of them is the bomb
            exact = _EXACT_OPS[op](a, b)
    return {"INT": _int_estimate(bits, exact)}


def passthrough(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    est = upstream.get("input")
    return {"output": est} if est is not None else None


def to_string(values: Mapping[str, Any], upstream: Mapping[str, Estimate | None]) -> dict[str, Estimate] | None:
    est = upstream.get("value")
    if est is None:
        return None
    # An integer prints one decimal digit per ~3.3 bits; other values print about their own size.
    return {"STRING": Estimate(max(est.bytes, 1), input="value")}
