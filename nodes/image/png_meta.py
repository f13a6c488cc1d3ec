"""The workflow embedded in a PNG: the engine's stdlib reader, re-exported for the image pack.

The reader lives in :mod:`nodegraph.pngtext` because opening a workflow from a
PNG must work without any node pack; this module keeps the image pack's
historical import path (``nodes.image.png_meta``) working.
"""

from __future__ import annotations

from nodegraph.pngtext import (
    DEFAULT_MAX_BYTES,
    PNG_SIGNATURE,
    WORKFLOW_KEY,
    PngMetadataError,
    read_png_text,
    read_png_workflow,
)

__all__ = ["DEFAULT_MAX_BYTES", "PNG_SIGNATURE", "PngMetadataError", "WORKFLOW_KEY", "read_png_text",
           "read_png_workflow"]
