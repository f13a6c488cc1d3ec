"""Editor preferences (Edit ▸ Preferences…): CPU threads for model work, the result cache's
memory budget and the device-memory budget for model weights (``--vram-budget``), kept in
QSettings and handed to the runner's worker.

Why here and not only on the command line: an artist who sees the machine crawl while
another program runs wants to give the editor fewer threads without restarting it from a
terminal (``nodegraph gui --threads`` / ``NODEGRAPH_THREADS`` stay, see
:mod:`nodegraph.threads`).  Precedence: a value given on the command line holds for that
session until the user changes it here; a stored preference applies otherwise; "Automatic"
leaves the choice to ``NODEGRAPH_THREADS`` or the per-workload rule.

Changes apply to runs queued afterwards: the worker sets them on its executor before such
a run starts (:meth:`gui.runner.RunController.configure`), never during one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from nodegraph.memory import check_vram_budget, parse_size
from nodegraph.threads import ENV_VAR, ThreadsError, available_cores, parse_threads

if TYPE_CHECKING:
    from .main_window import MainWindow

KEY_THREADS = "preferences/threads"
KEY_CACHE = "preferences/cache_budget"
KEY_VRAM = "preferences/vram_budget"
MAX_THREADS = 256


@dataclass(frozen=True)
class Preferences:
    """``threads``: None = automatic; ``cache_budget``: None = the default (half the RAM
    available), else a size as ``--cache-budget`` takes it ("4G", "25%"); ``vram_budget``: None =
    the default (``NODEGRAPH_VRAM_BUDGET`` or auto), else as ``--vram-budget`` takes it."""

    threads: int | None = None
    cache_budget: str | None = None
    vram_budget: str | None = None

    @classmethod
    def load(cls, qsettings: QSettings) -> Preferences:
        """The stored preferences; a value that no longer parses counts as unset."""
        try:
            threads = parse_threads(qsettings.value(KEY_THREADS, "") or None)
        except ThreadsError:
            threads = None
        cache = str(qsettings.value(KEY_CACHE, "") or "").strip() or None
        if cache is not None:
            try:
                parse_size(cache)
            except ValueError:
                cache = None
        vram = str(qsettings.value(KEY_VRAM, "") or "").strip() or None
        if vram is not None:
            try:
                vram = check_vram_budget(vram)
            except ValueError:
                vram = None
        return cls(threads, cache, vram)

    def save(self, qsettings: QSettings) -> None:
        qsettings.setValue(KEY_THREADS, str(self.threads) if self.threads else "auto")
        qsettings.setValue(KEY_CACHE, self.cache_budget or "")
        qsettings.setValue(KEY_VRAM, self.vram_budget or "")


def current(win: MainWindow) -> Preferences:
    """What the runs queued now will use (command line, stored or changed in the dialog)."""
    config = win.runner.config
    threads = config.get("threads", win.settings.get("threads"))
    cache = config.get("cache_budget", win.settings.get("cache_budget"))
    vram = config.get("vram_budget", win.settings.get("vram_budget"))
    try:
        n = parse_threads(threads)
    except ThreadsError:
        n = None
    return Preferences(n, str(cache) if cache else None, str(vram) if vram else None)


def apply(win: MainWindow, prefs: Preferences, *, keep: tuple[str, ...] = ()) -> None:
    """Hand ``prefs`` to the runner for the next runs (except the settings named in ``keep``)."""
    updates: dict[str, Any] = {"threads": prefs.threads, "cache_budget": prefs.cache_budget,
                               "vram_budget": prefs.vram_budget}
    for name in keep:
        updates.pop(name, None)
    win.runner.configure(**updates)
    for name, value in updates.items():  # validation and scripts read the window's settings
        if value is None:
            win.settings.pop(name, None)
        else:
            win.settings[name] = value


def apply_stored(win: MainWindow) -> None:
    """At start-up: the stored preferences, except where the command line said otherwise."""
    stored = Preferences.load(win.qsettings)
    keep = tuple(name for name in ("threads", "cache_budget", "vram_budget")
                 if win.settings.get(name) not in (None, ""))
    if stored != Preferences() or keep:
        apply(win, stored, keep=keep)


class PreferencesDialog(QDialog):
    """Threads (Automatic or a number), cache budget and device budget; OK checks the budgets' syntax."""

    def __init__(self, prefs: Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.threads = QSpinBox()
        self.threads.setRange(0, MAX_THREADS)
        self.threads.setSpecialValueText("Automatic")
        self.threads.setValue(prefs.threads or 0)
        cores = available_cores()
        env = os.environ.get(ENV_VAR)
        hint = f"{cores} core(s) available. Automatic: 1 thread for small models, all cores for big ones"
        if env:
            hint += f" ({ENV_VAR}={env} applies)"
        self.threads.setToolTip(hint + ".")
        self.cache = QLineEdit(prefs.cache_budget or "")
        self.cache.setPlaceholderText("default: half the RAM available")
        self.cache.setToolTip("Memory for cached results, e.g. 4G, 512M or 25% (of the RAM available)")
        self.vram = QLineEdit(prefs.vram_budget or "")
        self.vram.setPlaceholderText("default: auto (free VRAM minus a reserve; no limit on CPU)")
        self.vram.setToolTip("Device memory for model weights, e.g. 6G or 50% of the device's memory, auto or "
                             "unlimited; models that do not fit stream their blocks (slower, same image)")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #e06c75")
        self.error.setWordWrap(True)
        form = QFormLayout()
        form.addRow("CPU threads for model work", self.threads)
        note = QLabel(hint + ".")
        note.setWordWrap(True)
        form.addRow("", note)
        form.addRow("Result cache budget", self.cache)
        form.addRow("Device memory for models", self.vram)
        applies = QLabel("Changes apply to the runs queued after OK.")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(applies)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def preferences(self) -> Preferences | None:
        """The values entered, or None (with the reason shown) if a budget does not parse."""
        text = self.cache.text().strip()
        vram = self.vram.text().strip()
        try:
            if text:
                parse_size(text)
            if vram:
                vram = check_vram_budget(vram)
        except ValueError as exc:
            self.error.setText(str(exc))
            return None
        self.error.setText("")
        return Preferences(self.threads.value() or None, text or None, vram or None)

    def _accept(self) -> None:
        if self.preferences() is not None:
            self.accept()


def edit(win: MainWindow) -> Preferences | None:
    """Edit ▸ Preferences…: ask, store and apply; returns what was applied (None: cancelled)."""
    prefs = win.ask_preferences(current(win))
    if prefs is None:
        return None
    prefs.save(win.qsettings)
    apply(win, prefs)
    threads = prefs.threads or "automatic"
    win.statusBar().showMessage(f"Preferences saved: threads {threads}, cache {prefs.cache_budget or 'default'}, "
                                f"device {prefs.vram_budget or 'default'} (for the next runs)", 5000)
    return prefs
