"""Output gallery: every image made in this session, newest first, with the
settings that made it (the values of the run's nodes) in its tooltip.
Double-clicking an image opens the workflow embedded in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from nodegraph import Graph

_SETTING_KEYS = ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise", "ckpt_name",
                 "width", "height", "text")


@dataclass
class GalleryEntry:
    path: str
    node_id: str
    settings: str


def describe_settings(graph: Graph) -> str:
    """The values people want to see next to an image (seed, steps, prompt…)."""
    lines = []
    for n in graph:
        vals = {k: v for k, v in n.values.items() if k in _SETTING_KEYS}
        if vals:
            body = ", ".join(f"{k}={str(v)[:80]!s}" for k, v in vals.items())
            lines.append(f"{n.title or n.id}: {body}")
    return "\n".join(lines)


class GalleryPanel(QWidget):
    openWorkflow = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(128, 128))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setSpacing(6)
        lay.addWidget(self.list)
        self.entries: list[GalleryEntry] = []
        self.list.itemDoubleClicked.connect(
            lambda item: self.openWorkflow.emit(item.data(Qt.ItemDataRole.UserRole)))

    def add(self, path: str, node_id: str, graph: Graph) -> None:
        entry = GalleryEntry(path, node_id, describe_settings(graph))
        self.entries.insert(0, entry)
        img = QImage(path)
        icon = QIcon(QPixmap.fromImage(img.scaled(128, 128, Qt.AspectRatioMode.KeepAspectRatio,
                                                  Qt.TransformationMode.SmoothTransformation))) \
            if not img.isNull() else QIcon()
        item = QListWidgetItem(icon, Path(path).name)
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(f"{path}\n\n{entry.settings}")
        self.list.insertItem(0, item)
