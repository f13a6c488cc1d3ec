"""Open any workflow file: ours (.json or a PNG we saved) or ComfyUI's (UI/API JSON, or its PNGs).

``workflow.py`` stays a pure reader of our format; this is the one place that
sniffs what a file is and routes it, so the CLI and the editor open the same
things the same way.  Only JSON is parsed; nothing in a file is executed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WorkflowFileError
from .graph import Graph
from .jsontext import check_size, parse_json

# What a malformed document can still make a reader raise after its structural checks.  Workflow
# files come from downloads and other people's PNGs: whatever a bug lets through must reach the user
# as one error about the file (exit 2, a dialog), never as a traceback or an aborted editor.
_MALFORMED = (TypeError, KeyError, IndexError, ValueError, OverflowError, RecursionError, AttributeError)
DAMAGED = "the file is damaged or not a workflow nodegraph can read"

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry


def open_any(path: str | os.PathLike[str], registry: Registry | None = None) -> tuple[Graph, list[str]]:
    """``(graph, notes)`` for a workflow file of any supported kind.

    ComfyUI classes are mapped through the ComfyUI mappings of ``registry``'s
    packs (default: every installed pack).

    ``notes`` is empty for our own files; for ComfyUI imports it says what was
    imported, which nodes have no equivalent (kept as placeholders) and what
    was approximated.  Raises :class:`WorkflowFileError` naming the file, and
    only that, whatever the file holds.
    """
    try:
        return _open(path, registry)
    except WorkflowFileError:
        raise
    except _MALFORMED as exc:
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise WorkflowFileError(
            f"{DAMAGED} ({type(exc).__name__}"
            f"{': ' + detail if detail else ''}) -> open an undamaged copy, or re-export it from the app that "
            "made it", os.fspath(path)) from None


def _open(path: str | os.PathLike[str], registry: Registry | None) -> tuple[Graph, list[str]]:
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
    check_size(p)
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
        doc = parse_json(text)
    except (ValueError, RecursionError):
        doc = None  # let workflow.loads report the JSON error (or the duplicate key) in its words
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
