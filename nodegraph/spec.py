"""Declarative node signatures.

A node type is a plain :class:`NodeSpec`: a stable id, a version, typed
inputs and outputs, and the function that computes it.  Everything the
validator, the cache, the CLI catalogue and the GUI need is read from the spec,
so a node never has to be instantiated to be understood.  Specs are checked
when they are built (:func:`node`), so a malformed pack fails at import with
the node's id in the message rather than half-way through somebody's run.

Example::

    @node("math.add_int", category="math", display_name="Add (int)",
          inputs=[Int("a"), Int("b")], outputs=[Out("sum", "INT")])
    def add(ctx, a, b):
        return a + b
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import SpecError
from .types import ANY


class Widget(StrEnum):
    """How a constant value is edited (and validated)."""

    INT = "INT"
    FLOAT = "FLOAT"
    STRING = "STRING"
    BOOL = "BOOL"
    COMBO = "COMBO"
    SEED = "SEED"


# The port type a widget's value travels on when it is linked instead of typed in.
WIDGET_PORT_TYPE: dict[Widget, str] = {
    Widget.INT: "INT",
    Widget.FLOAT: "FLOAT",
    Widget.STRING: "STRING",
    Widget.BOOL: "BOOLEAN",
    Widget.COMBO: "STRING",
    Widget.SEED: "INT",
}

SEED_MAX = 2**64 - 1
_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Choices = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class Input:
    """One input port.

    ``widget`` is set for inputs that can hold a constant typed into the node
    (numbers, text, choices); those may *also* be linked from an output of the
    matching type.  Inputs without a widget (MODEL, IMAGE…) can only be linked.
    ``choices`` may be a callable so that lists such as "checkpoints found on
    disk" are computed when asked for, not at import time.
    """

    name: str
    type: str
    widget: Widget | None = None
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: Choices | None = None
    multiline: bool = False
    optional: bool = False
    tooltip: str = ""
    # Names a file: PATH_READ (a file the node reads) or PATH_WRITE (a name inside the output
    # folder).  Lets a caller that does not trust the workflow (the server) confine such values
    # generically, at validation, without knowing any node type (see nodegraph.paths).
    path: str = ""

    @property
    def has_widget(self) -> bool:
        return self.widget is not None

    def choice_list(self, settings: Mapping[str, Any] | None = None) -> list[str]:
        """Current choices.  A dynamic provider is called with the run's settings
        when it takes an argument (e.g. "checkpoints under the configured models
        folder"), so choices follow ``--models-dir`` without global state."""
        if self.choices is None:
            return []
        if callable(self.choices):
            return [str(v) for v in call_with_settings(self.choices, settings)]
        return self._static_choices

    @property
    def _static_choices(self) -> list[str]:
        cached = self.__dict__.get("_choices_cache")
        if cached is None:
            cached = [str(v) for v in self.choices]  # type: ignore[union-attr]
            object.__setattr__(self, "_choices_cache", cached)
        return cached

    def to_dict(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "optional": self.optional}
        if self.widget is not None:
            d["widget"] = self.widget.value
            d["default"] = self.default
        for key in ("min", "max", "step"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.choices is not None:
            try:
                d["choices"] = self.choice_list(settings)
            except Exception as exc:  # a broken provider must not break the catalogue
                d["choices"] = []
                d["choices_error"] = str(exc)
        if self.multiline:
            d["multiline"] = True
        if self.tooltip:
            d["tooltip"] = self.tooltip
        if self.path:
            d["path"] = self.path
        return d


PATH_READ, PATH_WRITE = "read", "write"


@dataclass(frozen=True)
class Output:
    """One output port: a name (stable, used by links in files) and a type."""

    name: str
    type: str
    tooltip: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "type": self.type}
        if self.tooltip:
            d["tooltip"] = self.tooltip
        return d


# --- convenience constructors -------------------------------------------------------------
# Defaults are passed through unconverted (ints are widened to float for FLOAT only):
# ``Int("steps", 2.7)`` must be rejected by :func:`check_spec`, naming the node, not
# silently become 2 -- and ``Int("steps", "abc")`` must not raise an anonymous ValueError.


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def Int(name: str, default: int = 0, *, min: int | None = None, max: int | None = None,
        step: int = 1, optional: bool = False, tooltip: str = "") -> Input:
    return Input(name, "INT", Widget.INT, default, min, max, step, optional=optional, tooltip=tooltip)


def Float(name: str, default: float = 0.0, *, min: float | None = None, max: float | None = None,
          step: float = 0.01, optional: bool = False, tooltip: str = "") -> Input:
    return Input(name, "FLOAT", Widget.FLOAT, _as_float(default), min, max, step, optional=optional,
                 tooltip=tooltip)


def String(name: str, default: str = "", *, multiline: bool = False, optional: bool = False,
           tooltip: str = "", path: str = "") -> Input:
    """``path=PATH_READ``/``PATH_WRITE`` marks text that names a file to read / a name to write."""
    return Input(name, "STRING", Widget.STRING, default, multiline=multiline, optional=optional,
                 tooltip=tooltip, path=path)


def Bool(name: str, default: bool = False, *, optional: bool = False, tooltip: str = "") -> Input:
    return Input(name, "BOOLEAN", Widget.BOOL, default, optional=optional, tooltip=tooltip)


def Combo(name: str, choices: Choices, default: str | None = None, *, optional: bool = False,
          tooltip: str = "") -> Input:
    return Input(name, "STRING", Widget.COMBO, default, choices=choices, optional=optional, tooltip=tooltip)


def Seed(name: str = "seed", default: int = 0, *, tooltip: str = "") -> Input:
    return Input(name, "INT", Widget.SEED, default, 0, SEED_MAX, 1, tooltip=tooltip)


def In(name: str, type: str, *, optional: bool = False, tooltip: str = "") -> Input:
    """A link-only input (MODEL, IMAGE, …)."""
    return Input(name, type, None, optional=optional, tooltip=tooltip)


def Out(name: str, type: str, tooltip: str = "") -> Output:
    return Output(name, type, tooltip)


# --- the spec ------------------------------------------------------------------------------

NodeFn = Callable[..., Any]
FingerprintFn = Callable[[Mapping[str, Any]], Any]
CacheValidFn = Callable[[Any], bool]


@dataclass(frozen=True)
class Estimate:
    """What a node's output will be, known before running (see ``NodeSpec.preflight``).

    ``bytes`` is the memory the value will take and ``work`` the peak memory the node needs
    while making it (0 = about ``bytes``); planning refuses a node whose output or work cannot
    fit the machine.  ``shape`` and ``value`` let the next node's hook estimate its own output
    (an image's ``(batch, height, width)``, a constant's exact value).  ``input`` and ``fix``
    say which input to blame and what to do when the estimate is too large.
    """

    bytes: int
    work: int = 0
    shape: tuple[int, ...] | None = None
    value: Any = None
    input: str | None = None
    fix: str = ""


# preflight(values, upstream) -> {output name: Estimate}; ``values`` are the node's checked constants,
# ``upstream`` the estimates of its linked inputs by input name (None where unknown).
PreflightFn = Callable[[Mapping[str, Any], Mapping[str, "Estimate | None"]], "Mapping[str, Estimate] | None"]


@dataclass(frozen=True)
class NodeSpec:
    """Everything the engine knows about a node type.

    * ``version`` is part of every cache key: bump it when the node's
      behaviour changes so stale cached results are not reused.
    * ``deterministic=False`` opts out of caching (the node and everything
      downstream re-run every time).
    * ``fingerprint(values[, settings])`` returns extra data folded into the
      cache key, for results that depend on the outside world (a file's size
      and mtime).  It may raise ``NodeInputError`` (e.g. file not found), which
      becomes a validation error on that input.
    * ``cache_valid(result)`` can reject a cached result (a saved file was
      deleted), forcing a re-run.
    * ``preflight(values, upstream)`` checks, during planning, what can be known
      before running: it may raise ``NodeInputError`` (a save prefix that leaves
      the output folder) and returns an :class:`Estimate` per output from the
      estimates of its inputs, so a graph whose results cannot fit in memory is
      refused by validation instead of exhausting the machine half-way.
    * ``fn(ctx, **inputs)`` returns the single output, a tuple of outputs in
      declaration order, a ``{name: value}`` dict, or a :class:`NodeResult`.
    """

    type_id: str
    fn: NodeFn
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    version: int = 1
    category: str = "misc"
    display_name: str = ""
    description: str = ""
    output_node: bool = False
    deterministic: bool = True
    fingerprint: FingerprintFn | None = None
    cache_valid: CacheValidFn | None = None
    preflight: PreflightFn | None = None
    pack: str = ""
    _input_index: dict[str, Input] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_input_index", {i.name: i for i in self.inputs})
        if not self.display_name:
            object.__setattr__(self, "display_name", self.type_id.rsplit(".", 1)[-1].replace("_", " ").title())

    def input(self, name: str) -> Input | None:
        return self._input_index.get(name)

    def output(self, name: str) -> Output | None:
        for o in self.outputs:
            if o.name == name:
                return o
        return None

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def to_dict(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "type": self.type_id,
            "version": self.version,
            "category": self.category,
            "display_name": self.display_name,
            "description": self.description,
            "pack": self.pack,
            "output_node": self.output_node,
            "deterministic": self.deterministic,
            "has_fingerprint": self.fingerprint is not None,
            "inputs": [i.to_dict(settings) for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class NodeResult:
    """Full return form of a node: outputs plus what to show/report.

    ``ui`` carries display data (preview images, text) and ``files`` the paths
    the node wrote, which end up in the run report's ``outputs``.
    """

    outputs: Any = ()
    ui: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


_ARITY: dict[Callable[..., Any], int] = {}


def call_with_settings(fn: Callable[..., Any], settings: Mapping[str, Any] | None, *args: Any) -> Any:
    """Call a spec hook with ``*args`` and, if it accepts one more positional
    parameter, the run's settings.  Lets simple hooks ignore settings."""
    arity = _ARITY.get(fn)
    if arity is None:
        arity = _ARITY[fn] = _positional_arity(fn)
    if arity > len(args):
        return fn(*args, settings or {})
    return fn(*args)


def check_spec(spec: NodeSpec, known_types: Callable[[str], bool] | None = None) -> None:
    """Raise :class:`SpecError` naming the node if the declaration is inconsistent."""

    def fail(msg: str) -> None:
        raise SpecError(f"node type {spec.type_id!r}: {msg}")

    if not _ID_RE.match(spec.type_id or ""):
        fail("type id must be dotted identifiers such as 'pack.node_name'")
    if not isinstance(spec.version, int) or spec.version < 1:
        fail("version must be a positive int")
    if not callable(spec.fn):
        fail("fn is not callable")
    seen: set[str] = set()
    for inp in spec.inputs:
        if not _NAME_RE.match(inp.name):
            fail(f"input name {inp.name!r} is not an identifier")
        if inp.name in seen:
            fail(f"input {inp.name!r} declared twice")
        seen.add(inp.name)
        if known_types is not None and not known_types(inp.type):
            fail(f"input {inp.name!r} has unknown port type {inp.type!r} (register it first)")
        _check_widget(spec, inp, fail)
        if inp.path and (inp.path not in (PATH_READ, PATH_WRITE) or inp.widget is not Widget.STRING):
            fail(f"input {inp.name!r}: path must be {PATH_READ!r} or {PATH_WRITE!r}, on a STRING input")
    out_seen: set[str] = set()
    for out in spec.outputs:
        if not _NAME_RE.match(out.name):
            fail(f"output name {out.name!r} is not an identifier")
        if out.name in out_seen:
            fail(f"output {out.name!r} declared twice")
        out_seen.add(out.name)
        if known_types is not None and not known_types(out.type):
            fail(f"output {out.name!r} has unknown port type {out.type!r}")
    if not spec.outputs and not spec.output_node:
        fail("a node with no outputs must be declared output_node=True, or nothing could ever use it")
    _check_signature(spec, fail)


def _check_widget(spec: NodeSpec, inp: Input, fail: Callable[[str], None]) -> None:
    w = inp.widget
    if w is None:
        if inp.type in ("INT", "FLOAT", "STRING", "BOOLEAN") and inp.default is not None:
            fail(f"input {inp.name!r} has a default but no widget")
        return
    if not isinstance(w, Widget):
        fail(f"input {inp.name!r}: widget must be a Widget, got {w!r}")
    if inp.type != WIDGET_PORT_TYPE[w] and inp.type != ANY:
        fail(f"input {inp.name!r}: widget {w.value} carries {WIDGET_PORT_TYPE[w]}, not {inp.type}")
    if w in (Widget.INT, Widget.SEED, Widget.FLOAT):
        num_type = float if w is Widget.FLOAT else int
        d = inp.default
        if isinstance(d, bool) or not isinstance(d, (int, float)) or (num_type is int and not isinstance(d, int)):
            fail(f"input {inp.name!r}: default {d!r} is not a {num_type.__name__}")
        if isinstance(d, float) and not math.isfinite(d):
            fail(f"input {inp.name!r}: default must be finite")
        if inp.min is not None and inp.max is not None and inp.min > inp.max:
            fail(f"input {inp.name!r}: min {inp.min} > max {inp.max}")
        if inp.min is not None and d < inp.min or inp.max is not None and d > inp.max:
            fail(f"input {inp.name!r}: default {d} outside [{inp.min}, {inp.max}]")
        if inp.step is not None and inp.step <= 0:
            fail(f"input {inp.name!r}: step must be > 0")
    elif w is Widget.STRING:
        if not isinstance(inp.default, str):
            fail(f"input {inp.name!r}: default must be a string")
    elif w is Widget.BOOL:
        if not isinstance(inp.default, bool):
            fail(f"input {inp.name!r}: default must be a bool")
    elif w is Widget.COMBO:
        if inp.choices is None:
            fail(f"input {inp.name!r}: a COMBO needs choices")
        if not callable(inp.choices):
            choices = list(inp.choices)
            if not choices and inp.default is None:
                fail(f"input {inp.name!r}: a COMBO needs at least one choice")
            if inp.default is not None and inp.default not in choices:
                fail(f"input {inp.name!r}: default {inp.default!r} is not one of {choices}")


def _check_signature(spec: NodeSpec, fail: Callable[[str], None]) -> None:
    try:
        sig = inspect.signature(spec.fn)
    except (TypeError, ValueError):
        return  # builtins / C callables: cannot check, accept
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        fail("fn must take the run context as its first positional parameter: fn(ctx, **inputs)")
    rest = params[1:]
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in rest)
    names = {p.name for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    declared = {i.name for i in spec.inputs}
    if not has_var_kw:
        missing = sorted(declared - names)
        if missing:
            fail(f"fn does not accept declared input(s) {missing}")
    for p in rest:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and p.name not in declared:
            fail(f"fn requires parameter {p.name!r} which is not a declared input")
        if p.name in declared and p.default is p.empty and spec.input(p.name).optional:  # type: ignore[union-attr]
            fail(f"optional input {p.name!r} needs a default value in fn (it may be absent)")


def node(
    type_id: str,
    *,
    inputs: Sequence[Input] = (),
    outputs: Sequence[Output] = (),
    version: int = 1,
    category: str = "misc",
    display_name: str = "",
    description: str = "",
    output_node: bool = False,
    deterministic: bool = True,
    fingerprint: FingerprintFn | None = None,
    cache_valid: CacheValidFn | None = None,
    preflight: PreflightFn | None = None,
) -> Callable[[NodeFn], NodeSpec]:
    """Decorator turning ``fn(ctx, **inputs)`` into a checked :class:`NodeSpec`.

    The description defaults to the function's docstring so the catalogue and
    the GUI tooltip say why the node exists without extra bookkeeping.
    """

    def wrap(fn: NodeFn) -> NodeSpec:
        spec = NodeSpec(
            type_id=type_id,
            fn=fn,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            version=version,
            category=category,
            display_name=display_name,
            description=description or inspect.cleandoc(fn.__doc__ or ""),
            output_node=output_node,
            deterministic=deterministic,
            fingerprint=fingerprint,
            cache_valid=cache_valid,
            preflight=preflight,
        )
        check_spec(spec)
        return spec

    return wrap


def coerce_value(inp: Input, value: Any) -> Any:
    """Normalise a constant to the widget's type so that equal values hash equally
    (``5`` and ``5.0`` for a FLOAT input).  Raises ``ValueError``/``TypeError``
    with a readable message when the value cannot be that type."""
    w = inp.widget
    if w is None:
        return value
    if w in (Widget.INT, Widget.SEED):
        if isinstance(value, bool):
            raise TypeError(f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if w is Widget.FLOAT:
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            f = float(value)
        elif isinstance(value, str):
            f = float(value.strip())
        else:
            raise TypeError(f"expected a number, got {type(value).__name__}")
        if not math.isfinite(f):
            raise ValueError(f"expected a finite number, got {value!r}")
        return f
    if w is Widget.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"expected true/false, got {value!r}")
    if w in (Widget.STRING, Widget.COMBO):
        if not isinstance(value, str):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return value
    return value


def _number(x: float) -> str:
    """``10000.0`` -> "10000", ``0.5`` -> "0.5": bounds read as the user would type them."""
    return str(int(x)) if float(x).is_integer() else str(x)


def expected_value(inp: Input) -> str:
    """What a valid constant for ``inp`` looks like, in words ("a whole number from 1 to
    10000"), for the fix part of an error message: the user needs the rule, not Python's."""
    w = inp.widget
    if w in (Widget.INT, Widget.SEED, Widget.FLOAT):
        kind = "a number" if w is Widget.FLOAT else "a whole number"
        if inp.min is not None and inp.max is not None:
            return f"{kind} from {_number(inp.min)} to {_number(inp.max)}"
        if inp.min is not None:
            return f"{kind} of at least {_number(inp.min)}"
        if inp.max is not None:
            return f"{kind} of at most {_number(inp.max)}"
        return kind
    if w is Widget.BOOL:
        return "true or false"
    if w is Widget.COMBO:
        return "one of its choices (listed by `nodegraph nodes --json`)"
    if w is Widget.STRING:
        return "text"
    return f"a value of type {inp.type}"


def explain_value_error(value: Any, exc: BaseException) -> str:
    """Turn the conversion error of :func:`coerce_value` into words: Python's
    "invalid literal for int() with base 10: 'x'" becomes "'x' is not a whole number"."""
    text = str(exc)
    if text.startswith("invalid literal for int()"):
        return f"{value!r} is not a whole number"
    if text.startswith("could not convert string to float"):
        return f"{value!r} is not a number"
    return text
