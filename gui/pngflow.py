"""The workflow embedded in a PNG written by nodegraph (or ComfyUI-style tools).

Uses the image pack's hardened chunk reader when it is installed; otherwise
falls back to Pillow's text chunks.  Only JSON is parsed; nothing is executed.
"""

from __future__ import annotations

import json
import os
from typing import Any


def read_png_workflow(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The workflow document in ``path``'s ``workflow`` text chunk, or None."""
    try:
        from nodes.image.png_meta import read_png_workflow as _reader
    except ImportError:
        _reader = None
    if _reader is not None:
        return _reader(path)
    from PIL import Image

    with Image.open(path) as im:
        text = (getattr(im, "text", None) or im.info).get("workflow")
    if text is None:
        return None
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the embedded workflow is not a JSON object")
    return doc
