"""Where nodes may write: file names confined to the output folder.

A filename prefix comes from a workflow file, which may come from anyone, so
it is treated as untrusted: absolute paths, drive letters and ``..`` segments
are refused, and the final path is checked to lie inside the output folder
after resolving symlinks.  Sub-folders (``portraits/img``) are allowed, as
ComfyUI users expect.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import NodeInputError

_BAD_CHARS = re.compile(r'[<>:"|?*]')


def _invisible(ch: str) -> bool:
    """Control characters (C0, DEL, C1) and format characters: bidirectional overrides such as U+202E
    (RIGHT-TO-LEFT OVERRIDE) make ``photo_gpj.exe`` display as ``photo_exe.jpg``, zero-width ones hide
    text; no file name needs them."""
    return unicodedata.category(ch) in ("Cc", "Cf")


def check_prefix(prefix: str, *, input_name: str = "filename_prefix") -> PurePosixPath:
    """The prefix as a relative path, or ``NodeInputError`` when it cannot name a file inside the
    output folder: empty, absolute, a drive, ``..``, reserved or invisible characters.  Needs no
    folder, so validation checks it before anything runs (see :func:`prefix_preflight`)."""
    if not isinstance(prefix, str):
        raise NodeInputError(input_name, f"prefix {prefix!r} is not text", "give a name such as 'nodegraph'")
    raw = prefix.replace("\\", "/").strip()
    if not raw:
        raise NodeInputError(input_name, "file name prefix is empty", "give a name such as 'nodegraph'")
    pp = PurePosixPath(raw)
    if pp.is_absolute() or re.match(r"^[A-Za-z]:", raw) or any(part == ".." for part in pp.parts):
        raise NodeInputError(input_name, f"prefix {prefix!r} points outside the output folder",
                             "use a plain name, optionally with sub-folders (e.g. 'portraits/img')")
    hidden = [f"U+{ord(c):04X}" for c in prefix if _invisible(c)]
    if hidden:
        raise NodeInputError(input_name, f"prefix {prefix!r} contains invisible or control characters "
                             f"({', '.join(dict.fromkeys(hidden))}), which can disguise a file's name",
                             "retype the name with letters, digits, '-', '_' and '/'")
    if _BAD_CHARS.search(raw):
        raise NodeInputError(input_name, f"prefix {prefix!r} contains characters not allowed in file names",
                             "use letters, digits, '-', '_' and '/'")
    if all(part == "." for part in pp.parts):
        raise NodeInputError(input_name, f"prefix {prefix!r} names the output folder itself, not a file in it",
                             "give a name such as 'nodegraph' (optionally with sub-folders)")
    return pp


def prefix_preflight(input_name: str = "filename_prefix") -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
    """A ``preflight`` hook for save nodes: refuse a bad constant prefix at validation, so
    ``nodegraph validate`` says what the Save node would say only after the whole graph ran."""

    def preflight(values: Mapping[str, Any], upstream: Mapping[str, Any]) -> None:
        if input_name in values:  # a linked prefix is only known when running; checked there
            check_prefix(values[input_name], input_name=input_name)

    return preflight


def confined_path(output_dir: Path, prefix: str, suffix: str, *, input_name: str = "filename_prefix") -> Path:
    """Next free ``<output_dir>/<prefix>_NNNNN<suffix>``, guaranteed inside ``output_dir``."""
    pp = check_prefix(prefix, input_name=input_name)
    root = output_dir.resolve()
    base = (root / pp).resolve()
    # Strictly inside: a prefix of "." resolves to the folder itself, whose own name
    # would then become the stem of a file written next to (outside) the folder.
    if base == root:
        raise NodeInputError(input_name, f"prefix {prefix!r} names the output folder itself, not a file in it",
                             "give a name such as 'nodegraph' (optionally with sub-folders)")
    if root not in base.parents:
        raise NodeInputError(input_name, f"prefix {prefix!r} resolves outside the output folder",
                             "use a plain name without links that leave the output folder")
    base.parent.mkdir(parents=True, exist_ok=True)
    stem = base.name
    taken = [p.name for p in base.parent.glob(f"{glob_escape(stem)}_*{suffix}")]
    pattern = re.compile(re.escape(stem) + r"_(\d+)" + re.escape(suffix))
    numbers = [int(m.group(1)) for n in taken if (m := pattern.fullmatch(n))]
    counter = max(numbers, default=0) + 1
    return base.parent / f"{stem}_{counter:05d}{suffix}"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
