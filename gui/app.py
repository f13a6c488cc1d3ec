"""Application entry: ``nodegraph gui [WORKFLOW] [--models-dir DIR]`` (and bare ``nodegraph``).

Sets up the QApplication (dark theme, bundled fonts), builds the node registry
from the installed packs, opens the window and offers crash recovery.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nodegraph import Registry


def build_registry() -> Registry:
    """Every installed pack, found through the ``nodegraph.nodes`` entry points like any
    third-party pack (ours are declared in pyproject.toml); a pack that fails to load is
    recorded in ``pack_errors`` instead of stopping the editor."""
    return Registry.with_installed_packs()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nodegraph gui", description="Open the node-graph editor.")
    p.add_argument("workflow", nargs="?", help="workflow (.json) or a PNG written by nodegraph")
    p.add_argument("--models-dir", help="root of the models/ folders (default: ./models and shipped demos)")
    p.add_argument("-o", "--output-dir", default="output", help="folder for images the runs write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", help="CPU threads for model work: a number or auto (env NODEGRAPH_THREADS)")
    p.add_argument("--cache-budget", help="memory for cached results, e.g. 4G or 25%% (default: half the "
                   "RAM available at start)")
    p.add_argument("--vram-budget", help="device memory for model weights, e.g. 6G, 50%% or auto "
                   "(env NODEGRAPH_VRAM_BUDGET)")
    return p


def make_app(argv: Sequence[str] | None = None) -> Any:
    """The QApplication (created once), themed."""
    from PySide6.QtWidgets import QApplication

    from . import theme

    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv or [sys.argv[0]]))
        app.setApplicationName("nodegraph")
        app.setOrganizationName("nodegraph")
    theme.apply(app)
    from .color_scheme import follow_system

    follow_system(app)  # light or dark as the system is set, and when it changes
    return app


def create_window(workflow: str | None = None, *, models_dir: str | None = None, output_dir: str = "output",
                  device: str = "auto", recover: bool = True, threads: str | int | None = None,
                  cache_budget: str | None = None, vram_budget: str | None = None,
                  **window_kwargs: Any) -> Any:
    """Build the main window (the app must exist).  Opens ``workflow``, or the
    recovered session, or the default txt2img workflow."""
    from nodegraph import Executor

    from .default_workflow import default_graph
    from .main_window import MainWindow

    settings: dict[str, Any] = {}
    if models_dir:
        settings["models_dir"] = str(Path(models_dir).resolve())
    if threads is not None:  # runs read it through nodegraph.threads (per-workload choice otherwise)
        settings["threads"] = threads
    if cache_budget:
        settings["cache_budget"] = cache_budget
    if vram_budget:  # read by the diffusion pack's memory manager
        settings["vram_budget"] = vram_budget
    registry = build_registry()
    # Subgraph components (./subgraphs, $NODEGRAPH_SUBGRAPHS_DIR, next to the workflow's folder),
    # read once before the window exists; the node search lists them like installed nodes.
    registry.load_default_subgraphs(workflow)
    executor = Executor(registry, device=device, output_dir=output_dir, settings=settings)
    win = MainWindow(registry, settings=settings, executor=executor, output_dir=output_dir, **window_kwargs)
    # A real start-up (recover=True) brings back the last session: unsaved work from a
    # crash (one tab each), then the files that were open; a workflow named on the
    # command line opens in a tab of its own beside them.
    opened = bool(recover and win.offer_recovery())
    if recover and not workflow:
        opened = win.restore_session() > 0 or opened
    if workflow:
        opened = win.open_path(workflow) or opened
    if not opened:
        win.set_graph(default_graph(), None)
    return win


def main(argv: list[str] | None = None) -> int:
    """Run the editor until its window closes; returns the exit code."""
    from nodegraph.threads import ThreadsError, parse_threads, prefer_passive_wait

    prefer_passive_wait()  # before torch loads: idle OpenMP threads sleep, so runs leave the UI its core
    args = _parser().parse_args(argv if argv is not None else sys.argv[1:])
    from .platform_check import platform_problem

    problem = platform_problem()  # before Qt: it would abort naming only the first missing library
    if problem:
        print(problem, file=sys.stderr)
        return 1
    try:
        parse_threads(args.threads, "--threads")
    except ThreadsError as exc:
        print(f"nodegraph gui: {exc}", file=sys.stderr)
        return 2
    app = make_app([sys.argv[0]])
    win = create_window(args.workflow, models_dir=args.models_dir, output_dir=args.output_dir,
                        device=args.device, threads=args.threads, cache_budget=args.cache_budget,
                        vram_budget=args.vram_budget)
    win.show()
    return int(app.exec())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
