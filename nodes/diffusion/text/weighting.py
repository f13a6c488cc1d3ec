"""Prompt-weighting syntax shared by A1111 and ComfyUI prompts.

Grammar (A1111 semantics, of which ComfyUI's is a subset):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1;
- ``(text:1.3)`` multiplies it by 1.3 (any signed decimal: ``(x:-0.5)``, ``(x:.8)``);
- nesting multiplies: ``((a:2) b)`` gives ``a`` 2.2 and ``b`` 1.1;
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters;
- a closer with no opener is literal text; an opener never closed applies to the rest
  of the prompt (A1111 does the same, so half-typed prompts still work);
- ``BREAK`` (upper case, a whole word) ends the current 75-token chunk when
  ``allow_break`` is true; it becomes a segment with ``is_break=True``.

The result is a list of :class:`Segment` with adjacent equal weights merged.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["PAREN_MULTIPLIER", "Segment", "parse_prompt"]

PAREN_MULTIPLIER = 1.1

_TOKEN_RE = re.compile(
    r"""
    \\[\\()\[\]]                                     # escaped bracket or backslash
  | (?P<weight>:\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\))  # ':1.2)' closes a paren with an explicit weight
  | (?P<brk>\bBREAK\b)
  | [()\[\]]
  | [^\\()\[\]:B]+                                   # plain text (stops at any possible token start)
  | .                                                # any other single character (':', 'B', lone '\')
    """,
    re.VERBOSE | re.DOTALL,
)


class Segment(NamedTuple):
    """A run of prompt text with one weight; ``is_break`` marks a BREAK (its text is empty)."""

    text: str
    weight: float
    is_break: bool = False


def parse_prompt(text: str, *, allow_break: bool = True) -> list[Segment]:
    """Split ``text`` into weighted segments. Always returns at least one segment."""
    parts: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            if not part[2]:
                part[1] *= factor

    for m in _TOKEN_RE.finditer(text):
        tok = m.group(0)
        if m.group("weight") is not None and round_open:
            scale(round_open.pop(), float(m.group("num")))
        elif m.group("weight") is not None:
            # No open paren: the ':' is literal, and the rest (number, ')') is literal too.
            parts.append([tok, 1.0, False])
        elif m.group("brk") is not None:
            if allow_break:
                parts.append(["", 1.0, True])
            else:
                parts.append([tok, 1.0, False])
        elif tok.startswith("\\") and len(tok) == 2:
            parts.append([tok[1], 1.0, False])
        elif tok == "(":
            round_open.append(len(parts))
        elif tok == "[":
            square_open.append(len(parts))
        elif tok == ")" and round_open:
            scale(round_open.pop(), PAREN_MULTIPLIER)
        elif tok == "]" and square_open:
            scale(square_open.pop(), 1.0 / PAREN_MULTIPLIER)
        else:
            parts.append([tok, 1.0, False])
    for start in round_open:
        scale(start, PAREN_MULTIPLIER)
    for start in square_open:
        scale(start, 1.0 / PAREN_MULTIPLIER)

    merged: list[Segment] = []
    for t, w, is_break in parts:
        if is_break:
            # Spaces around BREAK are separators, not content.
            if merged and not merged[-1].is_break:
                merged[-1] = merged[-1]._replace(text=merged[-1].text.rstrip())
            merged.append(Segment("", 1.0, True))
        elif merged and not merged[-1].is_break and merged[-1].weight == w:
            merged[-1] = merged[-1]._replace(text=merged[-1].text + t)
        else:
            if merged and merged[-1].is_break:
                t = t.lstrip()
            merged.append(Segment(t, w))
    merged = [s for s in merged if s.is_break or s.text]
    return merged or [Segment("", 1.0)]
