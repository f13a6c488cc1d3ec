"""Open ComfyUI workflows (UI and API JSON, PNGs) and export to ComfyUI's API format.

Stdlib only at import time (no torch, no Qt, no node packs)::

    from nodegraph.comfy import load_comfy, to_comfy_api

    result = load_comfy("ComfyUI_00001_.png", registry)   # or a .json path, or a parsed dict
    result.graph        # our Graph (positions, groups, titles carried over)
    result.unmapped     # [(node id, ComfyUI class_type)] kept as "comfy:<Class>" placeholders
    result.warnings     # what was approximated or dropped

    prompt = to_comfy_api(graph, registry)         # {id: {"class_type", "inputs", "_meta"}}

The engine knows no node type: each pack registers its ComfyUI mappings
with its nodes (``Registry.add_pack(name, nodes, comfy=ComfyMappings(...))``,
vocabulary in :mod:`.mapping`), and import and export read them from the
registry they are given (by default, every installed pack).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..jsontext import DuplicateKeyError, check_size, duplicate_key_message, parse_json
from .detect import detect, is_api_prompt, is_comfy
from .export import ComfyExportError, ExportResult, export_comfy_api, to_comfy_api
from .mapping import ComfyMappings, ComfyTable, ImportHook, L, NodeMap, Param, Reroute, W
from .models import describe_missing, missing_models
from .result import ComfyFormatError, ImportResult

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import Registry


def load_comfy(source: str | os.PathLike[str] | dict[str, Any], registry: Registry | None = None) -> ImportResult:
    """Import a ComfyUI workflow from a parsed document, a ``.json`` file or a PNG.

    Classes are mapped through the ComfyUI mappings of ``registry``'s packs
    (default: every installed pack); classes none maps become placeholders.
    For PNGs the UI ``workflow`` chunk is preferred (it has the layout), else the
    API ``prompt`` chunk.  Raises :class:`ComfyFormatError` if it is neither format.
    """
    table = ComfyTable.of(registry if registry is not None else _installed())
    if isinstance(source, dict):
        return _import_doc(source, table)
    path = Path(source)
    from .png import is_png, png_documents

    if is_png(path):
        docs = png_documents(path)
        for key in ("workflow", "prompt"):
            if key in docs and is_comfy(docs[key]):
                return _with_source(_import_doc(docs[key], table), path)
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
    return _with_source(_import_doc(doc, table), path)


def _with_source(result: ImportResult, path: Path) -> ImportResult:
    result.graph.meta.setdefault("name", path.stem)
    return result


def _installed() -> Registry:
    from ..registry import Registry

    return Registry.with_installed_packs()


def _import_doc(doc: Any, table: ComfyTable) -> ImportResult:
    kind = detect(doc)
    if kind == "comfy_ui":
        from .ui_format import import_ui

        return import_ui(doc, table)
    if kind == "comfy_api":
        from .api_format import import_api

        return import_api(doc, table)
    raise ComfyFormatError("not a ComfyUI workflow (neither the UI 'workflow' nor the API 'prompt' format)")


def __getattr__(name: str) -> Any:
    """``BY_COMFY`` / ``BY_OURS``: the merged mappings of every installed pack, for code written
    when the table lived here (new code: ``ComfyTable.of(registry)``)."""
    if name in ("BY_COMFY", "BY_OURS"):
        table = ComfyTable.of(_installed())
        return table.by_comfy if name == "BY_COMFY" else table.by_ours
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ComfyExportError", "ComfyFormatError", "ComfyMappings", "ComfyTable", "ExportResult", "ImportHook",
           "ImportResult", "L", "NodeMap", "Param", "Reroute", "W", "describe_missing", "detect", "export_comfy_api",
           "is_api_prompt", "is_comfy", "load_comfy", "missing_models", "to_comfy_api"]
