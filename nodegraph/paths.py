"""Confining path-like inputs to known folders, for callers that do not trust the workflow.

A workflow handed to the HTTP server comes from whoever can reach it, so a
"load image from path" input must not read ``/home/user/private.png`` and a
save prefix must not write outside the output folder.  Node specs mark such
inputs (``String(..., path=PATH_READ | PATH_WRITE)``); a :class:`PathPolicy`
put in the run's settings under :data:`PATH_POLICY` makes validation check
them -- generically, naming no node type:

* a *read* path must lie inside the input folder (relative names are taken
  relative to it, never to the current directory) and is handed to the node as
  that absolute path, so the node cannot fall back to searching elsewhere;
* a *write* name must be relative and stay inside the output folder;
* either one must be typed in, not linked from another node (a computed path
  could not be checked before the run).

Refusals are decided on the text alone (and, for paths already inside the
folder, on where their links lead), so the answer never tells whether some
file outside the folders exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import NodeInputError, ValidationIssue
from .spec import PATH_READ, PATH_WRITE, NodeSpec

PATH_POLICY = "path_policy"  # settings key holding a PathPolicy
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")  # incl. bidi overrides


@dataclass(frozen=True)
class PathPolicy:
    """Where path-like inputs may point: files read from ``input_dir``, written to ``output_dir``."""

    input_dir: Path
    output_dir: Path

    def confine(self, role: str, value: Any, input_name: str) -> Any:
        """The value to run with, or :class:`NodeInputError` when it leaves its folder."""
        if not isinstance(value, str) or not value.strip():
            return value  # the node's own validation reports an empty name
        if _CONTROL.search(value):
            raise NodeInputError(input_name, "the file name contains control characters",
                                 "type a plain file name")
        if role == PATH_READ:
            return self._confine_read(value.strip(), input_name)
        if role == PATH_WRITE:
            self._confine_write(value.strip(), input_name)
        return value

    def _confine_read(self, text: str, input_name: str) -> str:
        root = _real(self.input_dir)
        given = text.replace("\\", "/")
        candidate = given if _is_absolute(given) else os.path.join(root, given)
        lexical = os.path.normpath(candidate)
        if not _inside(lexical, root) or not _inside(os.path.realpath(lexical), root):
            raise NodeInputError(input_name, "this server reads files only from its input folder",
                                 "use the name of a file inside the server's input folder (e.g. 'photo.png')")
        return lexical

    def _confine_write(self, text: str, input_name: str) -> None:
        root = _real(self.output_dir)
        given = text.replace("\\", "/")
        lexical = os.path.normpath(os.path.join(root, given))
        if (_is_absolute(given) or ".." in PurePosixPath(given).parts or not _inside(lexical, root)
                or not _inside(os.path.realpath(lexical), root)):
            raise NodeInputError(input_name, "this server writes files only inside its output folder",
                                 "use a plain name, optionally with sub-folders (e.g. 'portraits/img')")

    def confine_node(self, node_id: str, spec: NodeSpec, sources: Mapping[str, Any],
                     constants: dict[str, Any]) -> list[ValidationIssue]:
        """Check (and rewrite, for reads) one node's path-like inputs; returns its issues."""
        issues = []
        for inp in spec.inputs:
            if not inp.path:
                continue
            if inp.name in sources:
                issues.append(ValidationIssue(
                    "path_not_allowed", "this server needs file names typed in, not linked from another node",
                    f"type the file name into {inp.name!r} instead of linking it", node_id, spec.type_id, inp.name))
            elif inp.name in constants:
                try:
                    constants[inp.name] = self.confine(inp.path, constants[inp.name], inp.name)
                except NodeInputError as exc:
                    issues.append(ValidationIssue("path_not_allowed", exc.message, exc.fix or "", node_id,
                                                  spec.type_id, inp.name))
        return issues


def _real(folder: Path) -> str:
    return os.path.realpath(os.path.abspath(folder))


def _is_absolute(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or bool(
        re.match(r"^[A-Za-z]:", text))


def _inside(path: str, root: str) -> bool:
    """Strictly inside ``root`` (the folder itself names no file)."""
    return path != root and path.startswith(root.rstrip(os.sep) + os.sep)
