"""Run presenter: turns what the engine says (run events, validation issues) into
what the window shows (node states on the canvas, the Problems panel, the
gallery, the status bar's run state).

The window only wires it up; the runner (:mod:`gui.runner`) only moves work to
and from the worker thread.  Keeping the translation here means one place knows
which event changes which piece of the picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

from nodegraph import (
    Graph,
    NodeError,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    NodeStats,
    RunFinished,
    RunStarted,
    validate,
)

from . import commands as cmd
from .panels.problems import Problem
from .run_feedback import NodeTimer
from .seeds import next_seeds
from .subgraph_editor import SpecSource

if TYPE_CHECKING:
    from .main_window import MainWindow


class RunPresenter(QObject):
    """Validation and run feedback for one workflow tab.

    Runs of every tab share the window's one runner (one worker, one executor cache);
    each job is tagged with the tab that queued it, and this presenter takes only its
    own tab's events (or, for a job queued without a tab, those of the tab shown).  The
    shared widgets (Problems panel, status label) show the tab on screen; run state of
    a tab in the background still lands on its own canvas.

    Validation after an edit runs on a background thread, on a snapshot of the graph:
    it may list model folders (thousands of files) and must never stall typing or
    dragging.  Results come back through a queued signal; a result for a graph that
    has changed since is dropped (the newer check is already on its way)."""

    _validated = Signal(int, object)  # generation, list[ValidationIssue] | Exception

    def __init__(self, win: MainWindow, tab: Any, validate_ms: int) -> None:
        super().__init__(tab)
        self.win = win
        self.tab = tab
        self.scene = tab.scene
        self.runner = win.runner
        self.validation: list[Problem] = []
        self.run_problems: list[Problem] = []
        self.run_graph: Graph | None = None
        self.last_report: Any = None
        self._done = 0
        self._memory_line = ""  # the device-memory line of the run in progress (NodeStats "memory")
        self.last_status = ""  # this tab's latest run state, shown again when the tab comes back on screen
        self.timer = NodeTimer()
        self.validate_timer = QTimer(self)
        self.validate_timer.setSingleShot(True)
        self.validate_timer.setInterval(validate_ms)
        self.validate_timer.timeout.connect(self.revalidate_in_background)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodegraph-validate")
        self._generation = 0  # bumped by every edit: results for older graphs are stale
        self._pending: Future | None = None
        self._closed = False
        self._validated.connect(self._on_validated)
        r = self.runner
        r.event.connect(self._event)
        r.invalid.connect(self._invalid)
        r.failed.connect(self._failed)
        r.runFinished.connect(self._finished)

    # -- routing: the runner is shared by every tab ------------------------------------------
    def _mine(self) -> bool:
        if self._closed:
            return False
        owner = self.runner.signal_owner
        return owner is self.tab or (owner is None and self.win.is_current(self.tab))

    def _event(self, ev: Any, preview: QImage | None) -> None:
        if self._mine():
            self.on_event(ev, preview)

    def _invalid(self, issues: list) -> None:
        if self._mine():
            self.on_invalid(issues)

    def _failed(self, message: str) -> None:
        if self._mine():
            self.add_run_problem(Problem(None, None, message, source="run"))

    def _finished(self, report: Any) -> None:
        if self._mine():
            self.on_finished(report)

    def _status(self, text: str) -> None:
        """The run state in the status bar, naming the tab when it is not the one shown."""
        self.last_status = text
        if not self.win.is_current(self.tab):
            text = f"{self.tab.document.display_name()}: {text}"
        self.win.status_label.setText(text)

    def reset(self) -> None:
        """A different document: forget the previous one's run problems and re-check."""
        self.run_problems = []
        self.revalidate()

    # -- validation + problems ----------------------------------------------------------------
    def schedule_validation(self) -> None:
        self._generation += 1
        self.validate_timer.start()

    @property
    def validation_pending(self) -> bool:
        """True while the shown problems may be out of date (an edit not yet checked)."""
        return self.validate_timer.isActive() or self._pending is not None

    def revalidate(self) -> list[Problem]:
        """Check the graph now, on this thread (a new document, or a caller that needs
        the answer before going on, like Run deciding about seeds)."""
        self.validate_timer.stop()
        self._generation += 1
        try:
            issues: Any = validate(self.scene.root, self.win.registry, scope="all", settings=self.win.settings)
        except Exception as exc:  # the editor must keep working even if validation has a bug
            issues = exc
        self._apply_validation(issues)
        return self.validation

    def revalidate_in_background(self) -> None:
        """Check a snapshot of the graph on the validation thread (after edits)."""
        if self._closed:
            return
        generation = self._generation
        snapshot = self.scene.root.copy()
        registry, settings = self.win.registry, dict(self.win.settings)

        def check() -> Any:
            try:
                return validate(snapshot, registry, scope="all", settings=settings)
            except Exception as exc:  # reported on the UI thread
                return exc

        future = self._pool.submit(check)
        self._pending = future
        future.add_done_callback(lambda f: self._deliver(generation, f.result()))

    def _deliver(self, generation: int, issues: Any) -> None:
        """On the validation thread: hand the result to the UI thread (queued signal)."""
        try:
            self._validated.emit(generation, issues)
        except RuntimeError:  # the window (and this presenter) is gone: nobody to tell
            pass

    def _on_validated(self, generation: int, issues: Any) -> None:
        if generation != self._generation:
            return  # the graph changed meanwhile: a newer check follows
        self._pending = None
        self._apply_validation(issues)

    def _apply_validation(self, issues: Any) -> None:
        if isinstance(issues, Exception):
            if self.win.is_current(self.tab):
                self.win.statusBar().showMessage(f"validation failed: {issues}", 5000)
            issues = []
        self.validation = [Problem.from_issue(i) for i in issues if i.kind != "no_outputs"]
        self.show_problems()

    def shutdown(self) -> None:
        """Stop accepting checks; one already running finishes on its own."""
        self._closed = True
        self.validate_timer.stop()
        self._generation += 1
        self._pending = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def show_problems(self) -> None:
        """Marks on this tab's canvas; the Problems panel too if this tab is shown."""
        problems = self.run_problems + self.validation
        editor = self.tab.subgraph_actions.editor
        by_node: dict[str, list[tuple[str | None, str]]] = {}
        for p in problems:
            shown = self._local(p.node_id)  # an inner node's problem marks its subgraph node
            if shown:
                own = p.node_id == editor.prefix() + shown
                by_node.setdefault(shown, []).append((p.input if own else None, p.message))
        self.scene.set_issues(by_node)
        if self.win.is_current(self.tab):
            self.win.problems.set_problems(problems, editor.node_label)
            self.win.dock_problems.setWindowTitle(f"Problems ({len(problems)})" if problems else "Problems")

    def add_run_problem(self, p: Problem) -> None:
        self.run_problems.append(p)
        self.show_problems()

    # -- running ------------------------------------------------------------------------------
    def run(self) -> int:
        """Queue a run of the current graph (a snapshot: keep editing meanwhile)."""
        self.scene.close_editor(commit=True)
        job = self.runner.submit(self.scene.root, owner=self.tab)
        busy = self.runner.current_job is not None and self.runner.current_job.job_id != job
        self._status("Waiting for the current run…" if busy else "Starting…")  # the queue label says "N queued"
        self.advance_seeds()
        return job

    def advance_seeds(self) -> None:
        """Seed control ("increment"/"randomize"…) is applied once the run has taken its
        snapshot, as ComfyUI does after queueing: the run uses the seed shown when Run
        was pressed, and runs queued back to back each get a new seed (applying it only
        when a run *finishes* would queue the same seed several times)."""
        graph, undo = self.scene.root, self.tab.undo
        specs = SpecSource(self.tab.subgraph_actions.editor)  # promoted seeds on subgraph nodes too
        updates = next_seeds(graph, specs)  # type: ignore[arg-type]
        if updates and self._runnable():
            undo.beginMacro("Update seeds after run")
            for nid, name, value in updates:
                undo.push(cmd.SetValueCommand(graph, nid, name, value, merge=False))
            undo.endMacro()

    def _runnable(self) -> bool:
        """Whether the run just queued will pass validation: an invalid graph must keep
        its seed (and gain no undo entry), since nothing was made with that seed.  The
        editor's own check (debounced, every node) answers when it is current and clean;
        otherwise the engine's check for what the run needs decides."""
        if self.validation_pending:
            self.revalidate()
        if not self.validation:
            return True
        return not validate(self.scene.root, self.win.registry, settings=self.win.settings)

    def _local(self, nid: str | None) -> str | None:
        """The node shown on the canvas for an engine node id: itself at the top level, the
        subgraph node holding it for an inner node (``outer/inner``), None if not on this level."""
        return self.tab.subgraph_actions.editor.local(nid)

    def on_event(self, ev: Any, preview: QImage | None) -> None:
        sc, win = self.scene, self.win
        local = self._local(getattr(ev, "node_id", None))
        if isinstance(ev, RunStarted):
            sc.clear_states()
            self.timer.clear()
            self.run_problems = []
            self.show_problems()
            self.tab.subgraph_actions.editor.run_started(list(ev.nodes))
            for nid in {self._local(n) for n in ev.nodes} - {None}:
                sc.set_state(nid, "queued")
            self.run_graph = self.runner.current_graph or sc.root.copy()  # what this run really used
            self._status("Running…")
            self._memory_line = ""
            win.progress.setRange(0, max(1, len(ev.nodes)))
            win.progress.setValue(0)
            self._done = 0
        elif isinstance(ev, NodeStarted):
            if local:
                sc.set_state(local, "running")
                self.timer.start(local)
            self._status(f"Running {sc.node_label(local) if local else ev.node_id}…")
        elif isinstance(ev, NodeProgress):
            if local:
                sc.set_progress(local, ev.step, ev.total, preview)
                sc.set_badge(local, self.timer.progress_text(local, ev.step, ev.total))
        elif isinstance(ev, NodeFinished):
            last = self.tab.subgraph_actions.editor.run_node_finished(ev.node_id)
            if local and sc.states.get(local) != "error":  # a subgraph node is done when its last inner node is
                status, seconds = self.timer.finish(local, ev.status, ev.seconds)
                sc.set_state(local, status if last else "running")
                if last:
                    sc.set_badge(local, self.timer.finished_text(status, seconds))
            if ev.status != "skipped":
                self._done += 1
                win.progress.setValue(self._done)
            self.show_node_ui(ev.node_id, ev.ui or {}, ev.status)
        elif isinstance(ev, NodeError):
            if local:
                sc.set_state(local, "error")
            first_line = ev.message.strip().splitlines()[0] if ev.message.strip() else "error"
            self.add_run_problem(Problem(ev.node_id, ev.input, first_line, source="run"))
        elif isinstance(ev, NodeStats):
            if ev.name == "memory" and ev.line:
                self._status(f"Running {sc.node_label(local) if local else ev.node_id}… | memory: {ev.line}")
                self._memory_line = ev.line
        elif isinstance(ev, RunFinished):
            memory = self._memory_line
            self._status(f"Run {ev.status} in {ev.seconds:.2f} s" + (f" | memory: {memory}" if memory else ""))

    def show_node_ui(self, nid: str, ui: Mapping[str, Any], status: str) -> None:
        """Preview and text on the node shown for ``nid`` (its subgraph node for an inner
        one); every image also goes to the gallery, whichever level is shown."""
        shown = self._local(nid)
        images = ui.get("images") or []
        if isinstance(images, list) and images:
            last = images[-1]
            path = last if isinstance(last, str) else (last.get("path") if isinstance(last, dict) else None)
            if path:
                img = QImage(str(path))
                if not img.isNull() and shown:
                    self.scene.set_preview(shown, img)
            if status == "executed":
                for im in images:
                    p = im if isinstance(im, str) else (im.get("path") if isinstance(im, dict) else None)
                    if p:
                        self.win.gallery.add(str(p), nid, self.run_graph or self.scene.root)
        text = ui.get("text")
        if isinstance(text, str) and shown:
            self.scene.set_node_text(shown, text[:2000])

    def on_invalid(self, issues: list) -> None:
        shown = {(p.node_id, p.input, p.message) for p in self.validation}
        for i in issues:
            if (i.node_id, i.input, i.message) not in shown:
                self.run_problems.append(Problem(i.node_id, i.input, i.message, i.fix, "run"))
        self.show_problems()
        self._status(f"Cannot run: {len(issues)} problem(s)")

    def on_finished(self, report: Any) -> None:
        """A run ended (done, cancelled, failed or refused): nodes it never reached must
        not stay "queued", nor the one it stopped in "running"."""
        for nid, state in list(self.scene.states.items()):
            if state in ("queued", "running"):
                self.scene.set_state(nid, None)
        self.last_report = report
