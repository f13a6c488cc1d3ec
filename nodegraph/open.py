"""Open any workflow file: ours (.json or a PNG we saved) or ComfyUI's (UI/API JSON, or its PNGs).

``workflow.py`` stays a pure reader of our format; this is the one place that
sniffs what a file is and routes it, so the CLI and the editor open the same
things the same way.  Only JSON is parsed; nothing in a file is executed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WorkflowFileError
from .graph import Graph

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry


def open_any(path: str | os.PathLike[str], registry: Registry | None = None) -> tuple[Graph, list[str]]:
    """``(graph, notes)`` for a workflow file of any supported kind.

    ComfyUI classes are mapped through the ComfyUI mappings of ``registry``'s
    packs (default: every installed pack).

    ``notes`` is empty for our own files; for ComfyUI imports it says what was
    imported, which nodes have no equivalent (kept as placeholders) and what
    was approximated.  Raises :class:`WorkflowFileError` naming the file.
    """
    from . import workflow
    from .comfy import detect, load_comfy
    from .comfy.png import is_png, png_documents

    p = Path(path)
    if not p.exists():
        where = "" if p.is_absolute() else f" (relative to {os.getcwd()})"
        raise WorkflowFileError(
            f"file not found{where} -> check the path; the shipped examples are in "
            "workflows/, e.g. workflows/txt2img.json",
            str(p),
        )
    if p.is_dir():
        raise WorkflowFileError(f"is a folder, not a workflow file -> {_files_hint(p)}", str(p))
    if is_png(p):
        docs = png_documents(p)
        ours = docs.get("workflow")
        if detect(ours) == "nodegraph":
            try:
                return workflow.from_dict(ours), []
            except WorkflowFileError as exc:
                raise WorkflowFileError(str(exc), str(p)) from None
        if not any(detect(d) in ("comfy_ui", "comfy_api") for d in docs.values()):
            raise WorkflowFileError("the PNG holds no workflow (no 'workflow' or 'prompt' text chunk)", str(p))
        result = load_comfy(p, registry)
        return result.graph, result.notes()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WorkflowFileError(
            "is neither JSON text nor a PNG (it is not UTF-8 text) -> open a workflow .json, "
            "or a PNG saved by nodegraph or ComfyUI",
            str(p),
        ) from None
    except OSError as exc:
        raise WorkflowFileError(f"cannot read: {exc.strerror or exc} -> check the file's permissions", str(p)) from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None  # let workflow.loads report the JSON error in its words
    if detect(doc) in ("comfy_ui", "comfy_api"):
        try:
            result = load_comfy(doc, registry)
        except WorkflowFileError as exc:
            raise WorkflowFileError(str(exc), str(p)) from None
        result.graph.meta.setdefault("name", p.stem)
        return result.graph, result.notes()
    return workflow.loads(text, source=str(p)), []


def _files_hint(folder: Path) -> str:
    """The fix for a folder given as a workflow: name the workflow-like files inside it."""
    try:
        names = sorted(c.name for c in folder.iterdir() if c.suffix.lower() in (".json", ".png") and c.is_file())
    except OSError:
        names = []
    if not names:
        return "pass a workflow file (.json, or a .png that embeds a workflow)"
    shown = ", ".join(str(folder / n) for n in names[:5]) + (", …" if len(names) > 5 else "")
    return f"pass one of the files in it, e.g. {shown}"
