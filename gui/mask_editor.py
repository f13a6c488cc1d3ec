"""The mask editor: paint a mask on a Load Image node's picture.

Where the mask goes (decided to match ComfyUI's mask editor, and so no node needs to know
about side files): Load Image's MASK output is ``1 - alpha`` of its picture, so the editor
saves a *copy of the picture with the mask in its alpha channel* into the input folder's
``clipspace/`` subfolder (ComfyUI's folder for this) and points the node at it through the
undo stack.  The original file is never changed; undoing the edit points the node back at
it.  The copy is named ``<stem>-mask-<hash>.png`` after its content, so a saved mask is an
immutable file: redo, old workflows and the run cache never see it change, and saving the
same mask twice writes one file.  A workflow saved with the mask runs unchanged in ComfyUI
(``clipspace/…`` is an ordinary input name there).

Editing: left drag paints (or erases in erase mode), right drag erases; brush size in image
pixels; feather blurs the mask's edges (a Gaussian, applied to the preview and baked into
the saved alpha, so reopening shows the feathered mask with feather back at 0); Clear and
Invert.  Every stroke, clear and invert is a step of the editor's own undo stack
(Ctrl+Z / Ctrl+Shift+Z in the editor); the graph sees one step, "Set <node>.image", on Save.

Files are read and written on a worker thread (pictures can be large; the UI never waits
for the disk); writes are atomic (``nodegraph.fileio``).  EXIF rotation is applied on load,
as Load Image does, so the mask lines up with the node's IMAGE.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QImage,
    QImageReader,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QUndoCommand,
    QUndoStack,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from nodegraph.fileio import atomic_write_bytes

from . import commands as cmd
from .image_import import input_folder

if TYPE_CHECKING:
    from .canvas.scene import GraphScene

MASK_FOLDER = "clipspace"
NEW_MASK_NAME = "painted.png"  # the stem of masks painted from scratch (clipspace/painted-mask-<hash>.png)
NEW_MASK_GREY = 48  # the blank canvas a new mask is painted on (its RGB is stored, but only alpha is read)
_MASK_SUFFIX = re.compile(r"-mask-[0-9a-f]{12}$")
MAX_FEATHER = 64
OVERLAY_ALPHA = 170  # how dark a fully masked pixel is drawn


# -- pixels (numpy imported lazily: the gui layer loads without it) ---------------------------------


def gray_to_array(img: QImage) -> Any:
    """A Grayscale8 QImage as a ``uint8 [H, W]`` array (a copy)."""
    import numpy as np

    g = img.convertToFormat(QImage.Format.Format_Grayscale8)
    h, w, bpl = g.height(), g.width(), g.bytesPerLine()
    return np.frombuffer(g.constBits(), np.uint8, count=h * bpl).reshape(h, bpl)[:, :w].copy()


def array_to_gray(arr: Any) -> QImage:
    """A ``uint8 [H, W]`` array as a Grayscale8 QImage (owning its pixels)."""
    import numpy as np

    a = np.ascontiguousarray(arr, np.uint8)
    h, w = a.shape
    return QImage(a.tobytes(), w, h, w, QImage.Format.Format_Grayscale8).copy()


def feather(mask: Any, radius: int) -> Any:
    """Gaussian blur of a ``uint8`` mask (sigma = radius / 2, reaching ``radius`` pixels), edges
    extended; returns ``uint8``.  Separable, so it stays fast on large masks."""
    import numpy as np

    if radius <= 0:
        return mask.copy()
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / (radius / 2.0)) ** 2)
    k /= k.sum()
    out = mask.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * (p[i:i + n] if axis == 0 else p[:, i:i + n])
        out = acc
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_picture(path: Path) -> tuple[QImage, Any]:
    """The picture as RGB888 (EXIF-rotated, like Load Image) and its mask ``255 - alpha`` (all 0
    for an opaque picture).  Raises OSError with a readable message."""
    import numpy as np

    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    img = reader.read()
    if img.isNull():
        raise OSError(f"{path}: {reader.errorString()}")
    rgba = img.convertToFormat(QImage.Format.Format_RGBA8888)
    h, w, bpl = rgba.height(), rgba.width(), rgba.bytesPerLine()
    px = np.frombuffer(rgba.constBits(), np.uint8, count=h * bpl).reshape(h, bpl)[:, : w * 4].reshape(h, w, 4)
    mask = (255 - px[..., 3]).copy() if img.hasAlphaChannel() else np.zeros((h, w), np.uint8)
    return img.convertToFormat(QImage.Format.Format_RGB888), mask


def picture_with_mask(rgb: QImage, mask: Any) -> bytes:
    """PNG bytes of the picture with ``alpha = 255 - mask`` (straight alpha: colours under the
    mask are kept, so the IMAGE output is unchanged)."""
    import numpy as np

    src = rgb.convertToFormat(QImage.Format.Format_RGB888)
    h, w, bpl = src.height(), src.width(), src.bytesPerLine()
    px = np.frombuffer(src.constBits(), np.uint8, count=h * bpl).reshape(h, bpl)[:, : w * 3].reshape(h, w, 3)
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = px
    rgba[..., 3] = 255 - np.asarray(mask, np.uint8)
    out = QImage(rgba.tobytes(), w, h, w * 4, QImage.Format.Format_RGBA8888).copy()
    buf = QByteArray()
    dev = QBuffer(buf)
    dev.open(QIODevice.OpenModeFlag.WriteOnly)
    if not out.save(dev, "PNG"):
        raise OSError("the masked picture could not be encoded as PNG")
    dev.close()
    return bytes(buf.data())


def mask_file_name(image_name: str, data: bytes) -> str:
    """``clipspace/<stem>-mask-<hash>.png`` for a picture named ``image_name`` (a re-edited
    mask copy keeps the original stem instead of growing a chain of suffixes)."""
    stem = _MASK_SUFFIX.sub("", Path(image_name).stem)
    return f"{MASK_FOLDER}/{stem}-mask-{hashlib.sha1(data).hexdigest()[:12]}.png"


def store_masked(folder: Path, image_name: str, data: bytes) -> str:
    """Write the masked copy atomically (once per content); returns its name in the input folder."""
    name = mask_file_name(image_name, data)
    target = folder / name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return name


@dataclass(frozen=True)
class NewMask:
    """Paint a mask from scratch for a node whose MASK input is not connected: a blank canvas of
    ``size`` (the latent's pixels); Save adds a ``loader_type`` node (its ``output`` MASK wired
    to the node's ``input``) reading the saved file, with channel alpha when it has a channel."""

    size: tuple[int, int]
    loader_type: str
    output: str
    input: str
    has_channel: bool


# -- undo steps inside the editor ----------------------------------------------------------------------


class MaskStep(QUndoCommand):
    """One change of the mask (a stroke, Clear, Invert): the pixels of the changed rectangle
    before and after, so a long editing session on a large picture keeps little memory."""

    def __init__(self, canvas: MaskCanvas, rect: QRect, before: QImage, after: QImage, text: str) -> None:
        super().__init__(text)
        self.canvas, self.rect, self.before, self.after = canvas, QRect(rect), before, after
        self._first = True

    def redo(self) -> None:
        if self._first:  # the change is already on the canvas when the step is pushed
            self._first = False
            return
        self.canvas.put_pixels(self.rect.topLeft(), self.after)

    def undo(self) -> None:
        self.canvas.put_pixels(self.rect.topLeft(), self.before)


# -- the canvas ------------------------------------------------------------------------------------


class MaskCanvas(QWidget):
    """The picture with the (feathered) mask over it in red; drags paint or erase."""

    changed = Signal()

    def __init__(self, undo: QUndoStack, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.undo = undo
        self.picture: QImage | None = None
        self.mask: QImage | None = None  # Grayscale8, 255 = masked
        self.brush = 12
        self.erase = False
        self.feather_px = 0
        self._overlay: QImage | None = None
        self._stroke: tuple[QImage, bool] | None = None  # mask before the stroke, erasing?
        self._last: QPointF | None = None
        self._dirty = QRect()  # image pixels the current stroke touched
        self._hover: QPointF | None = None  # where the brush outline is drawn (widget coordinates)
        self.setMinimumSize(420, 420)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setMouseTracking(True)  # the brush outline follows the pointer

    def set_picture(self, picture: QImage, mask: QImage) -> None:
        self.picture = picture
        self.set_mask(mask)

    def set_mask(self, mask: QImage) -> None:
        self.mask = mask
        self._rebuild_overlay()

    def put_pixels(self, at: QPoint, pixels: QImage) -> None:
        """Overwrite part of the mask (undo/redo of a step)."""
        assert self.mask is not None
        p = QPainter(self.mask)
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        p.drawImage(at, pixels)
        p.end()
        self._rebuild_overlay()

    def set_feather(self, radius: int) -> None:
        self.feather_px = radius
        self._rebuild_overlay()

    def final_mask(self) -> Any:
        """The mask as saved: ``uint8 [H, W]``, feathered."""
        return feather(gray_to_array(self.mask), self.feather_px)

    @staticmethod
    def _overlay_pixels(m: Any) -> QImage:
        """Masked pixels darkened (seen on any colour of picture) and the mask's half-way
        contour in white, so thin or feathered masks are still visible."""
        import numpy as np

        h, w = m.shape
        inside = m >= 128
        edge = np.zeros_like(inside)
        edge[:-1] |= inside[:-1] != inside[1:]
        edge[:, :-1] |= inside[:, :-1] != inside[:, 1:]
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 3] = (m.astype(np.uint16) * OVERLAY_ALPHA // 255).astype(np.uint8)
        rgba[edge] = (255, 255, 255, 255)
        return QImage(rgba.tobytes(), w, h, w * 4, QImage.Format.Format_RGBA8888).copy()

    def _rebuild_overlay(self, rect: QRect | None = None) -> None:
        """The whole overlay (feathered as saved), or during a stroke only ``rect``, sharp: a brush
        move on a large picture then costs the brush's area, not the picture's."""
        if self.mask is None:
            self._overlay = None
        elif rect is None or self._overlay is None:
            self._overlay = self._overlay_pixels(self.final_mask())
        else:
            r = rect.intersected(self.mask.rect())
            if r.isEmpty():
                return
            # one more row and column: the contour of a pixel looks at its right and lower neighbours
            ext = QRect(r.x(), r.y(), r.width() + 1, r.height() + 1).intersected(self.mask.rect())
            sub = self._overlay_pixels(gray_to_array(self.mask.copy(ext)))
            p = QPainter(self._overlay)
            p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
            p.drawImage(r.topLeft(), sub.copy(0, 0, r.width(), r.height()))
            p.end()
        self.changed.emit()
        self.update()

    def target(self) -> QRectF:
        if self.picture is None:
            return QRectF(self.rect())
        iw, ih = self.picture.width(), self.picture.height()
        scale = min((self.width() - 16.0) / iw, (self.height() - 16.0) / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_image(self, p: QPointF) -> QPointF:
        t = self.target()
        assert self.picture is not None
        return QPointF((p.x() - t.x()) / t.width() * self.picture.width(),
                       (p.y() - t.y()) / t.height() * self.picture.height())

    def from_image(self, p: QPointF) -> QPointF:
        t = self.target()
        assert self.picture is not None
        return QPointF(t.x() + p.x() / self.picture.width() * t.width(),
                       t.y() + p.y() / self.picture.height() * t.height())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#1e2024"))
        if self.picture is None:
            p.setPen(QColor("#c8ccd2"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Loading the picture…")
            p.end()
            return
        t = self.target()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        p.drawImage(t, self.picture)
        if self._overlay is not None:
            p.drawImage(t, self._overlay)
        p.setPen(QPen(QColor("#5b616b"), 1))
        p.drawRect(t)
        if self._hover is not None:  # the brush's size on screen
            r = self.brush / 2 * t.width() / self.picture.width()
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.setPen(QPen(QColor(0, 0, 0, 160), 3))
            p.drawEllipse(self._hover, r, r)
            p.setPen(QPen(QColor(255, 255, 255, 220), 1))
            p.drawEllipse(self._hover, r, r)
        p.end()

    def leaveEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._hover = None
        self.update()

    # painting
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self.mask is None or event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return
        erasing = self.erase or event.button() == Qt.MouseButton.RightButton
        self._stroke = (self.mask.copy(), erasing)
        self._dirty = QRect()
        self._last = self.to_image(event.position())
        self._dab(self._last, self._last)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self._hover = event.position()
        if self._stroke is None or self._last is None:
            self.update()
            return
        pos = self.to_image(event.position())
        self._dab(self._last, pos)
        self._last = pos

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self._stroke is None or self.mask is None:
            return
        before, erasing = self._stroke
        self._stroke, self._last = None, None
        r = self._dirty.intersected(self.mask.rect())
        if not r.isEmpty():
            self.undo.push(MaskStep(self, r, before.copy(r), self.mask.copy(r), "Erase" if erasing else "Paint"))
        if self.feather_px:
            self._rebuild_overlay()  # the feathered preview, once per stroke

    def _dab(self, a: QPointF, b: QPointF) -> None:
        assert self.mask is not None and self._stroke is not None
        p = QPainter(self.mask)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = QColor(0, 0, 0) if self._stroke[1] else QColor(255, 255, 255)
        p.setPen(QPen(color, float(self.brush), Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                      Qt.PenJoinStyle.RoundJoin))
        p.drawLine(a, b)
        p.end()
        reach = self.brush / 2 + 2
        seg = QRectF(a, b).normalized().adjusted(-reach, -reach, reach, reach).toAlignedRect()
        self._dirty = self._dirty.united(seg)
        self._rebuild_overlay(seg)  # the brush's area only, sharp; feathered again on release

    def replace_mask(self, new: QImage, text: str) -> None:
        """Clear / Invert: an undoable whole-mask change."""
        if self.mask is None:
            return
        before = self.mask.copy()
        self.set_mask(new)
        self.undo.push(MaskStep(self, new.rect(), before, new.copy(), text))


# -- the dialog ------------------------------------------------------------------------------------


class MaskEditorDialog(QDialog):
    """Edit the mask of Load Image node ``node_id``.  ``loaded`` fires when the picture is
    shown (or failed: with an error text), ``saved`` with the new image name after Save."""

    loaded = Signal(str)
    saved = Signal(str)
    _done = Signal(str, object)  # kind, payload (from the worker thread)

    def __init__(self, scene: GraphScene, node_id: str, settings: dict[str, Any],
                 parent: QWidget | None = None, *, new_mask: NewMask | None = None) -> None:
        super().__init__(parent)
        self.scene, self.node_id = scene, node_id
        self.folder = input_folder(settings)
        self.new_mask = new_mask
        self.created_node: str | None = None  # the mask loader a new mask added
        self._closed = False
        if new_mask is None:
            self.image_name = str(scene.graph.node(node_id).values.get("image", ""))
            self.setWindowTitle(f"Edit mask — {scene.node_label(node_id)} ({self.image_name})")
        else:
            self.image_name = NEW_MASK_NAME
            w, h = new_mask.size
            self.setWindowTitle(f"New mask for {scene.node_label(node_id)} ({w}×{h})")
        self.undo = QUndoStack(self)
        self.canvas = MaskCanvas(self.undo, self)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodegraph-mask")
        self._done.connect(self._on_done)

        self.brush = QSlider(Qt.Orientation.Horizontal, self)
        self.brush.setRange(1, 256)
        self.brush.valueChanged.connect(lambda v: setattr(self.canvas, "brush", int(v)))
        self.brush_label = QLabel(self)
        self.brush.valueChanged.connect(lambda v: self.brush_label.setText(f"{v} px"))
        self.brush.setValue(self.canvas.brush)
        self.feather = QSlider(Qt.Orientation.Horizontal, self)
        self.feather.setRange(0, MAX_FEATHER)
        self.feather.valueChanged.connect(lambda v: self.canvas.set_feather(int(v)))
        self.feather_label = QLabel("0 px", self)
        self.feather.valueChanged.connect(lambda v: self.feather_label.setText(f"{v} px"))
        self.erase = QCheckBox("Erase", self)
        self.erase.toggled.connect(lambda on: setattr(self.canvas, "erase", bool(on)))
        self.undo_button = QPushButton("Undo", self)
        self.undo_button.clicked.connect(self.undo.undo)
        self.redo_button = QPushButton("Redo", self)
        self.redo_button.clicked.connect(self.undo.redo)
        self.undo.canUndoChanged.connect(self.undo_button.setEnabled)
        self.undo.canRedoChanged.connect(self.redo_button.setEnabled)
        self.undo_button.setEnabled(False)
        self.redo_button.setEnabled(False)
        self.clear_button = QPushButton("Clear", self)
        self.clear_button.clicked.connect(self.clear_mask)
        self.invert_button = QPushButton("Invert", self)
        self.invert_button.clicked.connect(self.invert_mask)
        self.save_button = QPushButton("Save", self)
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        self.save_button.setEnabled(False)
        cancel = QPushButton("Cancel", self)
        cancel.clicked.connect(self.reject)
        for text, seq, fn in (("Undo stroke", QKeySequence.StandardKey.Undo, self.undo.undo),
                              ("Redo stroke", QKeySequence.StandardKey.Redo, self.undo.redo)):
            act = QAction(text, self)
            act.setShortcut(seq)
            act.triggered.connect(fn)
            self.addAction(act)
        self.status = QLabel("Left drag paints, right drag erases. The mask is saved into a copy of the "
                             f"picture under {MASK_FOLDER}/ in the input folder.", self)
        self.status.setWordWrap(True)

        tools = QHBoxLayout()
        tools.addWidget(QLabel("Brush", self))
        tools.addWidget(self.brush, 1)
        tools.addWidget(self.brush_label)
        tools.addWidget(QLabel("Feather", self))
        tools.addWidget(self.feather, 1)
        tools.addWidget(self.feather_label)
        tools.addWidget(self.erase)
        actions = QHBoxLayout()
        for b in (self.undo_button, self.redo_button, self.clear_button, self.invert_button):
            actions.addWidget(b)
        actions.addStretch(1)
        actions.addWidget(cancel)
        actions.addWidget(self.save_button)
        lay = QVBoxLayout(self)
        lay.addLayout(tools)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.status)
        lay.addLayout(actions)
        self.resize(640, 640)
        if new_mask is None:
            path = self.folder / self.image_name
            self._submit("loaded", lambda: load_picture(path))
        else:  # a blank canvas of the latent's size: nothing to read
            self.status.setText("Paint where the prompt should act (left drag paints, right drag erases). Save "
                                f"stores the mask under {MASK_FOLDER}/ in the input folder and adds a node "
                                "loading it, wired into the mask input.")
            import numpy as np

            w, h = new_mask.size
            canvas = QImage(w, h, QImage.Format.Format_RGB888)
            canvas.fill(QColor(NEW_MASK_GREY, NEW_MASK_GREY, NEW_MASK_GREY))
            self._on_done("loaded", (canvas, np.zeros((h, w), np.uint8)))

    # worker plumbing
    def _submit(self, kind: str, job: Any) -> None:
        def work() -> None:
            try:
                result: tuple[str, Any] = (kind, job())
            except (OSError, ValueError) as exc:
                result = ("error", f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc))
            try:
                self._done.emit(*result)
            except RuntimeError:  # the dialog is gone
                pass

        self._pool.submit(work)

    def _on_done(self, kind: str, payload: Any) -> None:
        if self._closed:  # a load or save that finished after Cancel: nothing to show or point at
            return
        if kind == "loaded":
            picture, mask = payload
            self.canvas.set_picture(picture, array_to_gray(mask))
            self.brush.setValue(max(4, min(picture.width(), picture.height()) // 20))  # sized to the picture
            self.save_button.setEnabled(True)
            self.loaded.emit("")
        elif kind == "saved":
            self._point_node_at(str(payload))
        else:
            self.status.setText(f"Error: {payload} -> check that the picture exists in {self.folder} "
                                "and that the folder is writable")
            if self.canvas.picture is None:
                self.loaded.emit(str(payload))
            self.save_button.setEnabled(self.canvas.picture is not None)

    # editing
    def clear_mask(self) -> None:
        if self.canvas.mask is not None:
            blank = QImage(self.canvas.mask.size(), QImage.Format.Format_Grayscale8)
            blank.fill(0)
            self.canvas.replace_mask(blank, "Clear")

    def invert_mask(self) -> None:
        if self.canvas.mask is not None:
            self.canvas.replace_mask(array_to_gray(255 - gray_to_array(self.canvas.mask)), "Invert")

    def mask_array(self) -> Any:
        """The mask Save writes (``uint8 [H, W]``, 255 = masked, feather applied)."""
        return self.canvas.final_mask()

    def save(self) -> None:
        """Encode and write the masked copy on the worker thread; then point the node at it."""
        if self.canvas.picture is None:
            return
        picture, mask, folder, name = self.canvas.picture.copy(), self.mask_array(), self.folder, self.image_name
        self.save_button.setEnabled(False)
        self.status.setText("Saving…")
        self._submit("saved", lambda: store_masked(folder, name, picture_with_mask(picture, mask)))

    def _point_node_at(self, name: str) -> None:
        graph = self.scene.graph
        if self.new_mask is not None:
            self._add_mask_node(name)
        elif self.node_id in graph.nodes and graph.node(self.node_id).values.get("image") != name:
            self.scene.push(cmd.SetValueCommand(graph, self.node_id, "image", name, merge=False))
        self.saved.emit(name)
        self.accept()

    def _add_mask_node(self, name: str) -> None:
        """A new mask loader reading the saved file, wired into the mask input: one undo step."""
        from .canvas.placement import free_spot

        nm, sc, graph = self.new_mask, self.scene, self.scene.graph
        assert nm is not None
        if self.node_id not in graph.nodes or graph.link_into(self.node_id, nm.input) is not None:
            return  # the node went away or got a mask meanwhile: the file stays, the graph is not touched
        values = {"image": name, **({"channel": "alpha"} if nm.has_channel else {})}
        item = sc.node_items.get(self.node_id)
        pos = item.pos() - QPointF(300, 0) if item is not None else QPointF(0, 0)
        spot = free_spot(sc, pos)
        sc.undo_stack.beginMacro(f"Paint mask for {sc.node_label(self.node_id)}")
        try:
            add = cmd.AddNodeCommand(graph, nm.loader_type, values=values,
                                     ui={"pos": [round(spot.x()), round(spot.y())]})
            sc.push(add)
            sc.push(cmd.ConnectCommand(graph, add.node_id, nm.output, self.node_id, nm.input))
        finally:
            sc.undo_stack.endMacro()
        self.created_node = add.node_id

    def done(self, result: int) -> None:  # noqa: D102 - Qt API: also stops the worker
        """Closing stops the worker and lets go of the picture, mask, overlay and stroke history
        (a large picture's undo steps are big); the small dialog shell goes with its parent."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().done(result)
        self.undo.clear()
        self.canvas.picture = self.canvas.mask = self.canvas._overlay = None
