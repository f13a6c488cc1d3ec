"""Workflow documents embedded in PNG text chunks (``workflow`` and ``prompt``).

ComfyUI writes its UI workflow under ``workflow`` and its API prompt under
``prompt``; nodegraph writes *its own* format under ``workflow``.  The chunks
are read with the engine's hardened stdlib reader (:mod:`nodegraph.pngtext`:
bounded sizes, CRC checks, never decodes pixels), so no image code is needed.
"""

from __future__ import annotations

import os
from typing import Any

from ..jsontext import DuplicateKeyError, duplicate_key_message, parse_json
from ..pngtext import PNG_SIGNATURE, PngMetadataError, read_png_text
from .result import ComfyFormatError

KEYS = ("workflow", "prompt")


def is_png(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def png_documents(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed JSON of the ``workflow`` and ``prompt`` chunks present in the PNG."""
    try:
        texts = read_png_text(path, set(KEYS))
    except PngMetadataError as exc:
        raise ComfyFormatError(str(exc)) from None
    docs: dict[str, Any] = {}
    for key in KEYS:
        if key not in texts:
            continue
        try:
            docs[key] = parse_json(texts[key])
        except DuplicateKeyError as exc:
            raise ComfyFormatError(f"embedded {key!r}: {duplicate_key_message(exc)}", os.fspath(path)) from None
        except (ValueError, RecursionError) as exc:
            raise ComfyFormatError(f"embedded {key!r} is not valid JSON ({exc})", os.fspath(path)) from None
    return docs
