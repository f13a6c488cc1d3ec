"""Images into the graph: a dropped picture or a pasted one becomes a Load Image node.

A dropped PNG that carries a workflow (ours or ComfyUI's) still opens that workflow;
any other picture is copied into the input folder (the folder Load Image lists) and a
Load Image node naming it appears where it was dropped.  A pasted clipboard image is
saved there as a PNG the same way.

The file work (reading PNG metadata, copying, encoding) runs on a worker thread: a
photo can be tens of megabytes and the UI must not wait for the disk.  Files land
atomically (written beside the target, then renamed), so Load Image never lists a
half-written picture; identical content is stored once (a name is reused when the
bytes match).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, QPointF, Signal
from PySide6.QtGui import QImage

from nodegraph import Registry
from nodegraph.comfy.mapping import ComfyTable
from nodegraph.fileio import atomic_write_bytes
from nodegraph.pngtext import PngMetadataError, read_png_text

from . import commands as cmd
from .canvas.placement import free_spot

if TYPE_CHECKING:
    from .main_window import MainWindow

#: The ComfyUI class whose mapped node receives dropped pictures: ComfyUI's LoadImage is what every pack
#: and workflow means by "a picture from the input folder", so the node type comes from the registry.
LOAD_IMAGE_CLASS = "LoadImage"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
WORKFLOW_EXTS = (".json",)


def load_image_node(registry: Registry) -> tuple[str, str] | None:
    """``(node type, input)`` of the node a pack registered for ComfyUI's LoadImage, or None."""
    m = ComfyTable.of(registry).by_comfy.get(LOAD_IMAGE_CLASS)
    if m is None:
        return None
    param = next((p for p in m.params if p.kind == "image" and not p.drop), None)
    return (m.ours, param.name) if param is not None and m.ours in registry else None


def input_folder(settings: Mapping[str, Any]) -> Path:
    """The folder Load Image reads (same rule as the image pack: settings, env, ./input)."""
    return Path(str(settings.get("input_dir") or os.environ.get("NODEGRAPH_INPUT_DIR") or "input"))


def png_has_workflow(path: Path) -> bool:
    """A PNG saved by nodegraph or ComfyUI (a "workflow" or "prompt" text chunk)."""
    if path.suffix.lower() != ".png":
        return False
    try:
        return bool(read_png_text(path, {"workflow", "prompt"}))
    except PngMetadataError:
        return False  # damaged metadata: treat it as a plain picture


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _free_name(folder: Path, name: str, same: Any) -> Path:
    """``name`` in ``folder``, or ``stem_1.ext``… if taken by different content (``same(path)``
    says whether an existing file already holds ours: then that one is reused)."""
    stem, ext = os.path.splitext(name)
    for i in range(10_000):
        cand = folder / (name if i == 0 else f"{stem}_{i}{ext}")
        if not cand.exists() or same(cand):
            return cand
    raise OSError(f"too many files named like {name!r} in {folder}")


def copy_into(src: Path, folder: Path) -> str:
    """Copy a picture into the input folder; returns its name there."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, src.name, lambda p: _same_bytes(p, src))
    if not target.exists():
        atomic_write_bytes(target, src.read_bytes())  # as every file the app writes: fsync, rename, umask mode
    return target.name


def store_png(data: bytes, folder: Path) -> str:
    """Store encoded PNG bytes as ``pasted_<hash>.png`` (the same picture pasted twice is one file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"pasted_{hashlib.sha1(data).hexdigest()[:12]}.png"
    if not target.exists():
        atomic_write_bytes(target, data)
    return target.name


def encode_png(image: QImage) -> bytes:
    buf = QByteArray()
    dev = QBuffer(buf)
    dev.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(dev, "PNG"):
        raise OSError("the clipboard image could not be encoded as PNG")
    dev.close()
    return bytes(buf.data())


class ImageImporter(QObject):
    """Drop and paste of pictures for one window.  ``finished`` fires (on the UI thread)
    after each import with the new node's id, or "" if it opened a workflow or failed."""

    finished = Signal(str)
    _done = Signal(str, object, object)  # kind, payload, (scene position, tab)

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodegraph-images")
        self._done.connect(self._on_done)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, job: Any, pos: QPointF) -> None:
        target = getattr(self.win, "workspace", None)  # the tab dropped on: the node goes there

        def work() -> None:
            try:
                result = job()
            except (OSError, ValueError) as exc:
                result = ("error", str(exc))
            try:
                self._done.emit(result[0], result[1], (pos, target))
            except RuntimeError:  # the window is gone
                pass

        self._pool.submit(work)

    def drop(self, paths: list[str], scene_pos: QPointF) -> None:
        """Files dropped on the canvas: a workflow (.json) opens; each picture becomes a
        Load Image node (several pictures stack down from the drop point), unless it is
        a PNG carrying a workflow, which opens instead."""
        folder = input_folder(self.win.settings)
        workflows = [Path(p) for p in paths if Path(p).suffix.lower() in WORKFLOW_EXTS]
        if workflows:
            self.win.open_path(workflows[0])
            self.finished.emit("")
            return
        pictures = [Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_EXTS]
        if not pictures:
            self.win.statusBar().showMessage("Drop a workflow (.json), or a picture to load it", 4000)
            return
        for path in pictures:
            def job(path: Path = path) -> tuple[str, Any]:
                if png_has_workflow(path):
                    return "workflow", str(path)
                try:
                    return "image", copy_into(path, folder)
                except OSError as exc:
                    return "error", (f"{path}: {exc.strerror or exc} -> check the file exists and "
                                     f"that {folder} is writable")
            self._submit(job, scene_pos)

    def paste_image(self, image: QImage, scene_pos: QPointF) -> None:
        """A clipboard picture: encoded and stored off the UI thread."""
        folder = input_folder(self.win.settings)
        img = image.copy()  # the clipboard's image may change under us
        self._submit(lambda: ("image", store_png(encode_png(img), folder)), scene_pos)

    def _on_done(self, kind: str, payload: Any, where: tuple[QPointF, Any]) -> None:
        pos, target = where
        if kind == "workflow":
            self.win.open_path(payload)
        elif kind == "image":
            self.finished.emit(self.add_load_image(payload, pos, target))
            return
        else:
            self.win.show_error("Cannot add the image", payload)
        self.finished.emit("")

    def add_load_image(self, name: str, pos: QPointF, target: Any = None) -> str:
        """A Load Image node for ``name`` (a file in the input folder) at a free spot; one undo step.
        ``target``: the tab the picture was dropped on (still open), else the shown one."""
        if target is None or getattr(target, "closed", True):
            target = self.win
        scene = target.scene
        loader = load_image_node(scene.registry)
        if loader is None:
            self.win.show_error("Cannot add the image", "this editor has no Load Image node (no installed pack "
                                "maps ComfyUI's LoadImage) -> install nodegraph with its image nodes")
            return ""
        spot = free_spot(scene, pos)
        add = cmd.AddNodeCommand(scene.graph, loader[0], values={loader[1]: name},
                                 ui={"pos": [round(spot.x()), round(spot.y())]}, text=f"Add image {name}")
        target.undo.push(add)
        scene.select_nodes([add.node_id])
        self.win.statusBar().showMessage(f"Added {name} (in {input_folder(self.win.settings)})", 4000)
        return add.node_id
