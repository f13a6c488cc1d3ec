"""What leaves the server about the machine: no tracebacks, no absolute paths.

Engine messages are written for a local user ("cannot read /home/ann/in/x.png")
and a run report carries tracebacks.  Over HTTP they would tell a stranger the
install layout and the user's name, so everything engine-made that the server
sends (validation problems, run messages, reports, events) goes through a
:class:`Redactor`: the server's own folders become ``<input>``/``<output>``,
other known roots (home, the Python install, the working directory) become
short names, and any absolute path left becomes ``<path>``.  Tracebacks are
dropped from replies and logged on the server instead.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_POSIX_ABS = re.compile(r"(?<![\w/.:~<>-])/(?:[^\s'\"/<>|]+/)*[^\s'\",;:)\]}<>|/]+")
_WINDOWS_ABS = re.compile(r"(?<![\w])[A-Za-z]:[\\/][^\s'\",;)\]}<>|]*")
MAX_DEPTH = 32  # events and reports are shallow; anything deeper is cut, not recursed into


class Redactor:
    """Replaces known folders with placeholders, then any other absolute path with ``<path>``."""

    def __init__(self, named: Iterable[tuple[str | Path | None, str]]) -> None:
        pairs: dict[str, str] = {}
        for folder, label in named:
            if not folder:
                continue
            for form in {os.path.abspath(folder), os.path.realpath(folder)}:
                if len(form) > 1:
                    pairs.setdefault(form.rstrip(os.sep), label)
        ordered = sorted(pairs.items(), key=lambda kv: -len(kv[0]))  # longest first
        # Whole path components only: "/tmp" must not turn "/tmpdata" into "<tmp>data".
        self._pairs = [(folder, re.compile(re.escape(folder) + r"(?![\w.-])"), label) for folder, label in ordered]

    @classmethod
    def for_server(cls, input_dir: Path, output_dir: Path, models_dir: str | None = None) -> Redactor:
        import nodegraph

        install = Path(nodegraph.__file__).resolve().parent.parent
        return cls([(input_dir, "<input>"), (output_dir, "<output>"), (models_dir, "<models>"),
                    (install, "<install>"), (sys.prefix, "<python>"), (sys.base_prefix, "<python>"),
                    (tempfile.gettempdir(), "<tmp>"), (os.getcwd(), "<cwd>"), (str(Path.home()), "~")])

    def text(self, value: str) -> str:
        for folder, pattern, label in self._pairs:
            if folder in value:
                value = pattern.sub(label, value)
        value = _POSIX_ABS.sub("<path>", value)
        return _WINDOWS_ABS.sub("<path>", value)

    def value(self, value: Any, depth: int = 0, *, max_text: int | None = None) -> Any:
        """Redact every string in a JSON-like value; drop ``traceback`` entries; cut deep
        nesting and (with ``max_text``) long strings."""
        if isinstance(value, str):
            value = self.text(value)  # first: clipping could cut a folder name in half
            if max_text is not None and len(value) > max_text:
                value = value[:max_text] + f"… ({len(value) - max_text} more characters)"
            return value
        if depth >= MAX_DEPTH:
            return None
        if isinstance(value, dict):
            return {self.value(str(k), depth, max_text=max_text): self.value(v, depth + 1, max_text=max_text)
                    for k, v in value.items() if k != "traceback"}
        if isinstance(value, (list, tuple)):
            return [self.value(v, depth + 1, max_text=max_text) for v in value]
        return value
