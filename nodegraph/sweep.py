"""Sweep specifications: ``NODE.INPUT=SPEC`` parsed into values, and sweeps expanded into items.

SPEC is

* ``a..b`` or ``a..b:step`` -- an inclusive number range (``1..100``, ``4..6:0.5``),
  stepped exactly in decimal so ``0.1..0.3:0.1`` has three values;
* ``x,y,z`` -- a comma list (``euler,heun``);
* ``[...]`` -- a JSON list, for values that contain commas (``["a, b", "c"]``);
* ``@FILE`` -- one value per line of a text file (blank lines are skipped);
* anything else -- a single value.

Values stay as parsed here (strings from a command line); the batch runner
converts them with the target input's type, which is where ``steps=abc`` fails.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .errors import NodegraphError

_RANGE_RE = re.compile(r"^([^\s,]+?)\.\.([^\s,:]+)(?::([^\s,]+))?$")
MAX_ITEMS = 1_000_000


class SweepError(NodegraphError):
    """A sweep specification cannot be parsed (bad range, unreadable @file, zip lengths differ...)."""



@dataclass(frozen=True)
class Sweep:
    """One swept input: ``key`` is ``NODE.INPUT``, ``values`` the raw values in order
    (strings from the command line are converted by the input's type later)."""

    key: str
    values: tuple[Any, ...]
    spec: str = ""

    @property
    def node_id(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def input(self) -> str:
        return self.key.rpartition(".")[2]


def parse_sweep(text: str, *, base_dir: str | Path | None = None) -> Sweep:
    """``"sampler.seed=1..4"`` -> ``Sweep("sampler.seed", (1, 2, 3, 4))``.

    ``@file`` paths are relative to ``base_dir`` (default: the current directory)."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    node_id, dot, name = key.rpartition(".")
    if not sep or not dot or not node_id or not name:
        raise SweepError(f"sweep {text!r} must look like NODE.INPUT=VALUES (e.g. sampler.seed=1..10)")
    return Sweep(key, tuple(parse_values(spec, base_dir=base_dir, label=text)), spec)


def parse_values(spec: Any, *, base_dir: str | Path | None = None, label: str | None = None) -> list[Any]:
    """The values a sweep spec stands for (see the module docstring).  Non-string specs
    (a Python list or range) are taken as they are."""
    label = label or str(spec)
    if not isinstance(spec, str):
        if isinstance(spec, (list, tuple, range)):
            values = list(spec)
        else:
            values = [spec]
    else:
        s = spec.strip()
        if s.startswith("@"):
            values = _read_value_file(s[1:], base_dir, label)
        elif s.startswith("["):
            try:
                values = json.loads(s)
            except json.JSONDecodeError as exc:
                raise SweepError(f"sweep {label!r}: not a valid JSON list ({exc.msg})") from None
            if not isinstance(values, list):
                raise SweepError(f"sweep {label!r}: expected a JSON list")
        elif (m := _RANGE_RE.match(s)) is not None:
            values = _parse_range(m.group(1), m.group(2), m.group(3), label)
        elif "," in s:
            values = [v.strip() for v in s.split(",")]
        else:
            values = [s]
    if not values:
        raise SweepError(f"sweep {label!r} has no values")
    return values


def _read_value_file(path: str, base_dir: str | Path | None, label: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"sweep {label!r}: cannot read {str(p)!r}: {exc}") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _number(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    if not d.is_finite():
        raise ValueError(text)
    return d


def _parse_range(a: str, b: str, step: str | None, label: str) -> list[int | float]:
    """Inclusive range with exact decimal stepping (``0.1..0.3:0.1`` has 3 values, not 2)."""
    try:
        lo, hi = _number(a), _number(b)
        st = _number(step) if step is not None else Decimal(1 if hi >= lo else -1)
    except ValueError as exc:
        raise SweepError(f"sweep {label!r}: {str(exc)!r} is not a number; a range is a..b or a..b:step "
                         "with numbers (for text containing '..' use a JSON list or @file)") from None
    if st == 0 or (hi - lo) * st < 0:
        raise SweepError(f"sweep {label!r}: step {st} never gets from {lo} to {hi}")
    count = int((hi - lo) / st) + 1
    if count > MAX_ITEMS:
        raise SweepError(f"sweep {label!r} has {count} values; at most {MAX_ITEMS} are allowed")
    integral = all(x == x.to_integral_value() and "." not in t and "e" not in t.lower()
                   for x, t in ((lo, a), (hi, b), (st, step or "1")))
    values = [lo + i * st for i in range(count)]
    return [int(v) for v in values] if integral else [float(v) for v in values]


def parse_sweeps(sweeps: Mapping[str, Any] | Iterable[str | Sweep], *,
                 base_dir: str | Path | None = None) -> list[Sweep]:
    """Accepts ``["node.input=SPEC", ...]``, ``{"node.input": SPEC or [values]}`` or Sweep objects."""
    out: list[Sweep] = []
    if isinstance(sweeps, Mapping):
        for key, spec in sweeps.items():
            key = str(key).strip()
            node_id, dot, name = key.rpartition(".")
            if not dot or not node_id or not name:
                raise SweepError(f"sweep key {key!r} must look like NODE.INPUT (e.g. sampler.seed)")
            text = spec if isinstance(spec, str) else json.dumps(spec, default=str)
            out.append(Sweep(key, tuple(parse_values(spec, base_dir=base_dir, label=f"{key}={text}")), text))
    else:
        for s in sweeps:
            out.append(s if isinstance(s, Sweep) else parse_sweep(s, base_dir=base_dir))
    keys = [s.key for s in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SweepError(f"input(s) swept more than once: {', '.join(dup)}")
    return out


def expand(sweeps: Sequence[Sweep], mode: str = "grid") -> list[dict[str, Any]]:
    """The raw overrides of every item, in order."""
    if mode not in ("grid", "zip"):
        raise SweepError(f"mode must be 'grid' or 'zip', not {mode!r}")
    if not sweeps:
        return [{}]
    if mode == "zip":
        lengths = {s.key: len(s.values) for s in sweeps}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise SweepError(f"--zip needs sweeps of equal length ({shown}); use --grid for all combinations")
        combos: Iterable[tuple[Any, ...]] = zip(*(s.values for s in sweeps), strict=True)
    else:
        total = math.prod(len(s.values) for s in sweeps)
        if total > MAX_ITEMS:
            raise SweepError(f"the grid has {total} items; at most {MAX_ITEMS} are allowed")
        combos = itertools.product(*(s.values for s in sweeps))
    return [dict(zip((s.key for s in sweeps), combo, strict=True)) for combo in combos]
