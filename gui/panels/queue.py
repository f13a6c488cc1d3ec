"""Queue and history panel: the runs waiting (remove, reorder, queue ×N) and the runs
finished (their images, timings and the exact workflow that made them: re-open, re-run).

The panel only talks to the runner's queue (:class:`gui.runner.RunController`: the
UI queues snapshots, one worker runs them) and to the history store
(:mod:`gui.history`); thumbnails are decoded on the store's worker thread.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..history import HistoryEntry, HistoryStore, default_path
from ..run_feedback import format_seconds

if TYPE_CHECKING:
    from ..main_window import MainWindow

THUMB = 56
STATUS_MARK = {"ok": "✓", "error": "✗", "cancelled": "■", "invalid": "!"}


def _load_thumb(path: str) -> QImage | None:
    img = QImage(path)
    if img.isNull():
        return None
    return img.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


class QueuePanel(QWidget):
    """Dock contents: "Queue ×N", the pending list, and the history list."""

    _thumb_ready = Signal(str, object)  # image path, QImage | None (from the worker)
    _history_loaded = Signal(object)  # list[HistoryEntry] (from the worker)
    historyChanged = Signal()

    def __init__(self, win: MainWindow, store: HistoryStore) -> None:
        super().__init__()
        self.win = win
        self.runner = win.runner
        self.store = store
        self._thumbs: dict[str, QImage | None] = {}
        self._closed = False
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodegraph-thumbs")
        self._build()
        self._thumb_ready.connect(self._on_thumb)
        self._history_loaded.connect(self._on_history_loaded)
        self.runner.queueChanged.connect(lambda _n: self.refresh_pending())
        self.runner.busyChanged.connect(lambda _b: self.refresh_pending())
        self.runner.jobFinished.connect(self._on_job_finished)
        store.load(lambda entries: self._emit_safely(self._history_loaded, entries))
        self.refresh_pending()

    # -- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.count = QSpinBox()
        self.count.setRange(1, 100)
        self.count.setPrefix("× ")
        self.count.setToolTip("How many runs to queue (each gets the next seed)")
        self.queue_button = QPushButton("Queue")
        self.queue_button.setToolTip("Queue the current workflow this many times")
        self.queue_button.clicked.connect(lambda: self.queue_n(self.count.value()))
        top.addWidget(self.queue_button, 1)
        top.addWidget(self.count)
        col.addLayout(top)

        col.addWidget(QLabel("Pending"))
        self.pending = QListWidget()
        self.pending.setMaximumHeight(130)
        self.pending.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.pending.setTextElideMode(Qt.TextElideMode.ElideRight)
        col.addWidget(self.pending)
        row = QHBoxLayout()
        self.btn_up, self.btn_down, self.btn_remove = QPushButton("Up"), QPushButton("Down"), QPushButton("Remove")
        self.btn_up.clicked.connect(lambda: self.move_selected(-1))
        self.btn_down.clicked.connect(lambda: self.move_selected(+1))
        self.btn_remove.clicked.connect(self.remove_selected)
        for b in (self.btn_up, self.btn_down, self.btn_remove):
            row.addWidget(b)
        col.addLayout(row)

        col.addWidget(QLabel("History"))
        self.history = QListWidget()
        self.history.setIconSize(QSize(THUMB, THUMB))
        self.history.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.history.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.history.itemDoubleClicked.connect(lambda _i: self.reopen_selected())
        col.addWidget(self.history, 1)
        row = QHBoxLayout()
        self.btn_open, self.btn_rerun, self.btn_clear = QPushButton("Open"), QPushButton("Re-run"), QPushButton("Clear")
        self.btn_open.setToolTip("Open the exact workflow of this run in the editor")
        self.btn_rerun.setToolTip("Queue this run's workflow again (the editor is left as it is)")
        self.btn_open.clicked.connect(self.reopen_selected)
        self.btn_rerun.clicked.connect(self.rerun_selected)
        self.btn_clear.clicked.connect(self.clear_history)
        for b in (self.btn_open, self.btn_rerun, self.btn_clear):
            row.addWidget(b)
        col.addLayout(row)

    # -- pending -------------------------------------------------------------------------------
    def queue_n(self, n: int) -> list[int]:
        """Queue the current workflow ``n`` times (seed controls advance between them)."""
        return [self.win.run() for _ in range(max(1, n))]

    def refresh_pending(self) -> None:
        self.pending.clear()
        current = self.runner.current_job
        if current is not None:
            it = QListWidgetItem(f"▶ #{current.job_id}  running · {self._describe(current.graph, current.owner)}")
            it.setData(Qt.ItemDataRole.UserRole, None)
            it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            self.pending.addItem(it)
        for job in self.runner.pending():
            it = QListWidgetItem(f"#{job.job_id}  {self._describe(job.graph, job.owner)}")
            it.setData(Qt.ItemDataRole.UserRole, job.job_id)
            self.pending.addItem(it)

    def _describe(self, graph: Any, owner: Any = None) -> str:
        """The workflow's name (its tab's file name when queued from a tab) and size."""
        name = graph.meta.get("name") if hasattr(graph, "meta") else None
        document = getattr(owner, "document", None) or self.win.document
        return f"{name or document.display_name()} · {len(graph)} nodes"

    def _selected_job(self) -> int | None:
        it = self.pending.currentItem()
        return it.data(Qt.ItemDataRole.UserRole) if it is not None else None

    def pending_ids(self) -> list[int]:
        return [job.job_id for job in self.runner.pending()]

    def move_selected(self, delta: int) -> None:
        jid = self._selected_job()
        if jid is None:
            return
        ids = self.pending_ids()
        self.runner.move(jid, ids.index(jid) + delta)
        self._select_job(jid)

    def remove_selected(self) -> None:
        jid = self._selected_job()
        if jid is not None:
            self.runner.remove(jid)

    def _select_job(self, jid: int) -> None:
        for i in range(self.pending.count()):
            if self.pending.item(i).data(Qt.ItemDataRole.UserRole) == jid:
                self.pending.setCurrentRow(i)

    # -- history -------------------------------------------------------------------------------
    def _on_job_finished(self, job_id: int, graph: Any, report: Any) -> None:
        if graph is None or self._closed:
            return
        entry = HistoryEntry.from_run(job_id, graph, report, name=self._describe(graph, self.runner.signal_owner))
        self.store.add(entry)
        self.refresh_history()

    def _on_history_loaded(self, entries: list[HistoryEntry]) -> None:
        if self._closed:
            return
        self.store.merge_loaded(entries)
        self.refresh_history()

    def refresh_history(self) -> None:
        self.history.clear()
        for e in self.store.entries:
            when = time.strftime("%d %b %H:%M", time.localtime(e.finished_at))
            mark = STATUS_MARK.get(e.status, "?")
            it = QListWidgetItem(f"{mark} {when} · {format_seconds(e.seconds)}\n{e.name}")
            it.setToolTip(self._details(e))
            it.setSizeHint(QSize(0, THUMB + 6))  # a whole thumbnail per row
            if e.images:
                self._set_icon(it, e.images[-1])
            self.history.addItem(it)
        self.historyChanged.emit()

    def _details(self, e: HistoryEntry) -> str:
        slow = sorted(e.node_seconds.items(), key=lambda kv: -kv[1])[:8]
        lines = [f"{e.status}, {format_seconds(e.seconds)}"]
        lines += [f"  {self._node_name(e, n)}: {format_seconds(s)}" for n, s in slow]
        lines += [f"  {p}" for p in e.images[:4]]
        return "\n".join(lines)

    def _node_name(self, e: HistoryEntry, nid: str) -> str:
        """A node of a past run as the user knows it: its title, else its type's name."""
        node = e.workflow.get("nodes", {}).get(nid) or {}
        spec = self.win.registry.get(str(node.get("type", "")))
        return str(node.get("title") or (spec.display_name if spec else nid))

    def _set_icon(self, item: QListWidgetItem, path: str) -> None:
        if path in self._thumbs:
            img = self._thumbs[path]
            if img is not None:
                item.setIcon(QIcon(QPixmap.fromImage(img)))
            return
        self._thumbs[path] = None
        self._decoder.submit(lambda: self._emit_safely(self._thumb_ready, path, _load_thumb(path)))

    def _on_thumb(self, path: str, img: QImage | None) -> None:
        self._thumbs[path] = img
        if img is None:
            return
        for i, e in enumerate(self.store.entries):
            if e.images and e.images[-1] == path and i < self.history.count():
                self.history.item(i).setIcon(QIcon(QPixmap.fromImage(img)))

    def thumbnail_count(self) -> int:
        return sum(1 for i in range(self.history.count()) if not self.history.item(i).icon().isNull())

    def _selected_entry(self) -> HistoryEntry | None:
        row = self.history.currentRow()
        return self.store.entries[row] if 0 <= row < len(self.store.entries) else None

    def reopen_selected(self) -> bool:
        """Show the selected run's workflow in the editor (as an untitled document)."""
        e = self._selected_entry()
        if e is None:
            return False
        self.win.open_graph(e.graph())  # in a tab of its own: the open workflows stay
        self.win.statusBar().showMessage(f"Opened the workflow of run #{e.job_id}", 4000)
        return True

    def rerun_selected(self) -> int | None:
        """Queue the selected run's workflow exactly as it ran (same seeds)."""
        e = self._selected_entry()
        return self.runner.submit(e.graph()) if e is not None else None

    def clear_history(self) -> None:
        self.store.clear()
        self.refresh_history()

    def shutdown(self) -> None:
        self._closed = True
        self._decoder.shutdown(wait=False, cancel_futures=True)
        self.store.shutdown()

    @staticmethod
    def _emit_safely(signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the panel is gone (window closed while reading)
            pass


def make_store(path: Any = None) -> HistoryStore:
    """The history at ``path``, else in the user's data folder."""
    return HistoryStore(path or default_path())

