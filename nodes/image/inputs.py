"""The input folder: where "Load Image" finds pictures, and how names map to files.

``input_dir`` comes from the run's settings (``input_dir``), else the
``NODEGRAPH_INPUT_DIR`` environment variable, else ``./input`` (ComfyUI's
layout).  Stdlib only: this runs while listing choices and validating, which
must never import torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.errors import NodeInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def input_dir(settings: Mapping[str, Any] | None = None) -> Path:
    """The configured input folder (it may not exist)."""
    settings = settings or {}
    return Path(str(settings.get("input_dir") or os.environ.get("NODEGRAPH_INPUT_DIR") or "input"))


def list_input_images(settings: Mapping[str, Any] | None = None) -> list[str]:
    """Image files under the input folder, as ``/``-separated relative names, sorted.
    Hidden files and folders (``.name``) are skipped."""
    root = input_dir(settings)
    if not root.is_dir():
        return []
    names = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            names.append(rel.as_posix())
    return sorted(names, key=str.lower)


def resolve_input_name(name: str, settings: Mapping[str, Any] | None, input_name: str = "image") -> Path:
    """File for a name chosen from :func:`list_input_images`; refuses names leaving the folder."""
    root = input_dir(settings)
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise NodeInputError(input_name, f"{name!r} is not a file name inside the input folder",
                             f"pick a file from {root}")
    path = root / rel
    if not path.is_file():
        raise NodeInputError(input_name, f"image {name!r} not found in the input folder {root}",
                             f"put the file into {root} or pick another image")
    return path


def resolve_image_path(path: str, settings: Mapping[str, Any] | None, input_name: str = "path") -> Path:
    """File for a free-form path: absolute, else relative to the input folder, then to the
    folder of the workflow being run (so shipped workflows find their ``inputs/``), then
    to the current directory (so ``--set load.path=photos/a.png`` works from a shell)."""
    text = path.strip()
    if not text:
        raise NodeInputError(input_name, "no image path given", "type the path of an image file")
    p = Path(os.path.expanduser(text))
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [input_dir(settings) / p]
        if settings and settings.get("workflow_dir"):
            candidates.append(Path(str(settings["workflow_dir"])) / p)
        candidates.append(Path.cwd() / p)
    for c in candidates:
        if c.is_file():
            return c
    searched = ", ".join(str(c) for c in candidates)
    raise NodeInputError(input_name, f"image file {text!r} not found (looked at: {searched})",
                         "check the path, or put the file into the input folder")


def file_fingerprint(path: Path, input_name: str) -> tuple[str, int, int]:
    """(path, size, mtime_ns): changing or replacing the file re-runs the node."""
    try:
        st = path.stat()
    except OSError as exc:
        raise NodeInputError(input_name, f"cannot read {path}: {exc.strerror or exc}",
                             "check that the file exists and is readable") from None
    return str(path.resolve()), st.st_size, st.st_mtime_ns
