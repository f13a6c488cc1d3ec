"""Open ComfyUI workflows (UI and API JSON, PNGs) and export to ComfyUI's API format.

Stdlib only at import time (no torch, no Qt, no node packs)::

    from nodegraph.comfy import load_comfy, to_comfy_api

    result = load_comfy("ComfyUI_00001_.png")      # or a .json path, or a parsed dict
    result.graph        # our Graph (positions, groups, titles carried over)
    result.unmapped     # [(node id, ComfyUI class_type)] kept as "comfy:<Class>" placeholders
    result.warnings     # what was approximated or dropped

    prompt = to_comfy_api(graph, registry)         # {id: {"class_type", "inputs", "_meta"}}

The mapping table (:mod:`.mapping`) is the single place that knows which
ComfyUI class and input corresponds to which of ours.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..jsontext import DuplicateKeyError, check_size, duplicate_key_message, parse_json
from .detect import detect, is_api_prompt, is_comfy
from .export import ComfyExportError, ExportResult, export_comfy_api, to_comfy_api
from .mapping import BY_COMFY, BY_OURS, NodeMap, Param
from .models import describe_missing, missing_models
from .result import ComfyFormatError, ImportResult


def load_comfy(source: str | os.PathLike[str] | dict[str, Any]) -> ImportResult:
    """Import a ComfyUI workflow from a parsed document, a ``.json`` file or a PNG.

    For PNGs the UI ``workflow`` chunk is preferred (it has the layout), else the
    API ``prompt`` chunk.  Raises :class:`ComfyFormatError` if it is neither format.
    """
    if isinstance(source, dict):
        return _import_doc(source)
    path = Path(source)
    from .png import is_png, png_documents

    if is_png(path):
        docs = png_documents(path)
        for key in ("workflow", "prompt"):
            if key in docs and is_comfy(docs[key]):
                return _with_source(_import_doc(docs[key]), path)
        raise ComfyFormatError("the PNG holds no ComfyUI workflow or prompt", str(path))
    check_size(path)
    try:
        doc = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ComfyFormatError("file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComfyFormatError(f"cannot read: {exc}", str(path)) from None
    except DuplicateKeyError as exc:
        raise ComfyFormatError(duplicate_key_message(exc), str(path)) from None
    except (ValueError, RecursionError) as exc:
        raise ComfyFormatError(f"not valid JSON ({exc})", str(path)) from None
    return _with_source(_import_doc(doc), path)


def _with_source(result: ImportResult, path: Path) -> ImportResult:
    result.graph.meta.setdefault("name", path.stem)
    return result


def _import_doc(doc: Any) -> ImportResult:
    kind = detect(doc)
    if kind == "comfy_ui":
        from .ui_format import import_ui

        return import_ui(doc)
    if kind == "comfy_api":
        from .api_format import import_api

        return import_api(doc)
    raise ComfyFormatError("not a ComfyUI workflow (neither the UI 'workflow' nor the API 'prompt' format)")


__all__ = ["BY_COMFY", "BY_OURS", "ComfyExportError", "ComfyFormatError", "ExportResult", "ImportResult",
           "NodeMap", "Param", "describe_missing", "detect", "export_comfy_api", "is_api_prompt", "is_comfy",
           "load_comfy", "missing_models", "to_comfy_api"]
