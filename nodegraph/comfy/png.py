"""Workflow documents embedded in PNG text chunks (``workflow`` and ``prompt``).

ComfyUI writes its UI workflow under ``workflow`` and its API prompt under
``prompt``; nodegraph writes *its own* format under ``workflow``.  The chunks
are read with the image pack's hardened reader (bounded sizes, CRC checks,
never decodes pixels), so the engine itself stays free of image code.
"""

from __future__ import annotations

import os
from typing import Any

from ..jsontext import DuplicateKeyError, duplicate_key_message, parse_json
from .result import ComfyFormatError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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
        from nodes.image.png_meta import PngMetadataError, read_png_text
    except ImportError:  # pragma: no cover - the image pack ships with nodegraph
        raise ComfyFormatError("reading workflows from PNGs needs the image node pack (nodes.image)",
                               os.fspath(path)) from None
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
