"""The ``nodegraph`` command.

Exit codes: 0 success, 1 a node failed (or the run was cancelled), 2 the
workflow or the command line is invalid — checked before any work starts.
Heavy modules (torch, node packs) are imported only by the sub-commands that
need them, so ``nodegraph --help`` stays instant.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_RUN_ERROR, EXIT_INVALID = 0, 1, 2


def _port(text: str) -> int:
    """``--port`` as argparse type: 0..65535 (0 = any free port).  A bad port is then a usage
    error with exit code 2, not an ``OverflowError`` traceback from ``bind()``."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; use 1-65535, or 0 for any free port") \
            from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range; use 1-65535, or 0 for any free port")
    return port


def _threads(text: str) -> int | str:
    """``--threads`` value: a positive count, or ``auto`` (also 0) for the per-workload choice."""
    from .threads import ThreadsError, parse_threads

    try:
        n = parse_threads(text, "--threads")
    except ThreadsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return "auto" if n is None else n


_THREADS_HELP = ("CPU threads for model work: a number, or auto (default: 1 for small models and images, every "
                 "core for big ones; env NODEGRAPH_THREADS)")
def _size(text: str) -> str:
    """``--cache-budget`` as argparse type: checked now (exit 2 with the accepted forms), kept as text so a
    percentage is taken of the RAM available when the executor starts."""
    from .memory import parse_size

    try:
        parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _vram_budget(text: str) -> str:
    """``--vram-budget`` as argparse type: ``auto``, ``unlimited`` or a size (``4G``, ``50%`` of the
    device's memory); checked now (exit 2 with the accepted forms), kept as text for the packs that
    manage device memory (they read ``settings["vram_budget"]``, else NODEGRAPH_VRAM_BUDGET)."""
    from .memory import check_vram_budget

    try:
        return check_vram_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_VRAM_HELP = ("device memory the models' weights may use, e.g. 6G or 50%% of the device's memory; auto (default: "
              "free VRAM minus a reserve on CUDA, unlimited elsewhere) or unlimited; models that do not fit stream "
              "their blocks from RAM (env NODEGRAPH_VRAM_BUDGET)")
_CACHE_HELP = ("memory the result cache may use between runs, e.g. 4G, 512M or 25%% of available RAM "
               "(default: half the RAM available at start)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nodegraph",
        description="Node-graph engine for diffusion image pipelines: run, validate and inspect workflows.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow headless")
    run.add_argument("workflow", help="workflow file (.json or .png; ComfyUI workflows are imported)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override an input value (repeatable), e.g. --set sampler.seed=42")
    run.add_argument("-o", "--output-dir", default="output", help="folder for written files (default: output)")
    run.add_argument("--report", metavar="FILE", help="write the run report as JSON")
    run.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    run.add_argument("--output", dest="targets", action="append", metavar="NODE_ID",
                     help="run only these output nodes (repeatable; default: all output nodes)")
    run.add_argument("--models-dir", help="root of the models/ folders (default: ./models and shipped demos)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--threads", type=_threads, help=_THREADS_HELP)
    run.add_argument("--cache-budget", type=_size, help=_CACHE_HELP)
    run.add_argument("--vram-budget", type=_vram_budget, help=_VRAM_HELP)

    val = sub.add_parser("validate", help="check a workflow without running it")
    val.add_argument("workflow")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE")
    val.add_argument("--all", action="store_true", help="check every node, not only those outputs need")
    val.add_argument("--json", action="store_true", help="print problems as JSON")
    val.add_argument("--models-dir", help="root of the models/ folders")

    gui = sub.add_parser("gui", help="open the desktop editor (also: bare `nodegraph`)")
    gui.add_argument("workflow", nargs="?", help="workflow or PNG to open (default: workflows/txt2img.json)")
    gui.add_argument("--models-dir", help="root of the models/ folders")
    gui.add_argument("--threads", type=_threads, help=_THREADS_HELP)
    gui.add_argument("--cache-budget", type=_size, help=_CACHE_HELP)
    gui.add_argument("--vram-budget", type=_vram_budget, help=_VRAM_HELP)

    batch = sub.add_parser(
        "batch", help="run a workflow over a sweep of values (grid or zip), resumable",
        description="Run WORKFLOW once per combination of swept values with one executor (shared work such as "
                    "loading the checkpoint runs once).  Outputs are named by their parameters and listed in "
                    "OUTDIR/manifest.json.  Re-running the same command resumes: items already written are "
                    "skipped.  Exit codes: 0 all items ok, 1 some item failed or Ctrl+C, 2 invalid input "
                    "(nothing was run).")
    batch.add_argument("workflow", help="workflow file (.json)")
    batch.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="NODE.INPUT=VALUES",
                       help="values to sweep (repeatable): a..b, a..b:step (inclusive), x,y,z, a JSON list, "
                            "or @FILE with one value per line; e.g. --sweep sampler.seed=1..100")
    combine = batch.add_mutually_exclusive_group()
    combine.add_argument("--grid", dest="mode", action="store_const", const="grid",
                         help="every combination of the sweeps (default)")
    combine.add_argument("--zip", dest="mode", action="store_const", const="zip",
                         help="pair the sweeps element by element (equal lengths)")
    batch.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                       help="fixed override for every item (repeatable)")
    batch.add_argument("-o", "--output-dir", default="output", help="folder for files and manifest.json")
    resume = batch.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="require an existing manifest in OUTDIR and continue it (resuming is also the "
                             "default whenever one exists)")
    resume.add_argument("--fresh", action="store_true",
                        help="ignore an existing manifest and run every item again")
    batch.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run on Ray: a cluster address (e.g. auto, ray://host:10001) or none for a local "
                            "runtime (needs: pip install 'nodegraph[ray]')")
    batch.add_argument("--workers", type=int, default=None,
                       help="Ray workers (default: 2 locally, the cluster's CPU count otherwise)")
    batch.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    batch.add_argument("--output", dest="targets", action="append", metavar="NODE_ID",
                       help="run only these output nodes (repeatable)")
    batch.add_argument("--models-dir", help="root of the models/ folders")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.add_argument("--threads", type=_threads, help=_THREADS_HELP)
    batch.add_argument("--cache-budget", type=_size, help=_CACHE_HELP)
    batch.add_argument("--vram-budget", type=_vram_budget, help=_VRAM_HELP)

    serve = sub.add_parser("serve", help="serve the HTTP API (queue, status, cancel, outputs, events)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only; any other address "
                            "requires a token, generated unless --token gives one)")
    serve.add_argument("--port", type=_port, default=8188, help="port (default 8188; 0 picks a free one)")
    serve.add_argument("-o", "--output-dir", default="output", help="folder for written files")
    serve.add_argument("--input-dir", help="the only folder server runs read images from (default "
                                           "$NODEGRAPH_INPUT_DIR, else ./input)")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    serve.add_argument("--models-dir", help="root of the models/ folders")
    serve.add_argument("--token", metavar="TOKEN",
                       help="require 'Authorization: Bearer TOKEN' on every request; 'auto' generates one "
                            "into a user-only file (the default when --host is not loopback)")
    serve.add_argument("--token-file", metavar="FILE",
                       help="where --token auto writes the token (default ~/.config/nodegraph/server-token)")
    serve.add_argument("--allow-host", dest="allow_hosts", action="append", default=[], metavar="NAME",
                       help="also accept this Host name (e.g. the machine's LAN name; repeatable). "
                            "Loopback names and the --host address are always accepted")
    serve.add_argument("--threads", type=_threads, help=_THREADS_HELP)
    serve.add_argument("--cache-budget", type=_size, help=_CACHE_HELP)
    serve.add_argument("--vram-budget", type=_vram_budget, help=_VRAM_HELP)

    exp = sub.add_parser("export-comfy", help="export a workflow to ComfyUI's API format (JSON)")
    exp.add_argument("workflow", help="workflow file (.json or .png; ComfyUI files too)")
    exp.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the API prompt")
    exp.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE")
    exp.add_argument("--models-dir", help="root of the models/ folders")

    nodes = sub.add_parser("nodes", help="list the node catalogue")
    nodes.add_argument("--json", action="store_true", help="full specs as JSON")
    nodes.add_argument("--models-dir", help="root of the models/ folders (fills file choices)")
    return p


class _StderrLog(logging.Handler):
    """Shows what packs log on the ``nodegraph`` logger at INFO (e.g. which extra model-paths file is
    used) as ``nodegraph: ...`` lines, on whatever ``sys.stderr`` is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"nodegraph: {self.format(record)}", file=sys.stderr)


def _log_to_stderr() -> None:
    logger = logging.getLogger("nodegraph")
    if not any(isinstance(h, _StderrLog) for h in logger.handlers):
        logger.addHandler(_StderrLog())
    logger.setLevel(logging.INFO)


# Commands that do one job and exit (``gui`` and ``serve`` live on).
_ONE_SHOT = ("run", "batch", "validate", "nodes", "export-comfy")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``nodegraph`` command.  ``argv=None`` (the console script, ``python -m nodegraph.cli``) means this
    call is the whole process: a one-shot command then also applies :func:`_process_gc` (callers that pass
    ``argv``, such as tests, keep their interpreter's garbage collector as it was)."""
    args = _parser().parse_args(argv)
    if argv is None and args.command in _ONE_SHOT:
        with _process_gc(args.command):
            return _main(args)
    return _main(args)


@contextmanager
def _process_gc(command: str) -> Iterator[None]:
    """Garbage-collector policy for a one-shot process: measured on the README's first command (2-core
    machine), the collector took ~0.3 s CPU during start-up and ~0.5 s more at interpreter exit, of a 1.9 s
    process -- all of it walking the ~180k objects that importing torch creates, which live until exit anyway.

    * ``run``: no collection until the run starts (imports allocate hundreds of thousands of objects and
      almost no cycles, so the collector triggered ~400 times for nothing); when it starts, everything
      alive is frozen (moved out of the collector's view) and collection resumes for the run itself.
    * Every one-shot command freezes what is alive before the interpreter exits, so exit does not walk
      it again.  Objects are still released by reference counting; buffered files and logs are flushed
      and closed as usual (written files are closed when written).
    """
    global _gc_paused
    if command == "run":
        gc.disable()
        _gc_paused = True
    try:
        yield
    finally:
        _gc_paused = False
        gc.freeze()
        gc.enable()


_gc_paused = False  # True from a one-shot `run`'s start until its RunStarted event (see _process_gc)


def _resume_gc_when_run_starts(listener: Callable[[Any], None]) -> Callable[[Any], None]:
    """``listener`` that first ends the start-up pause of :func:`_process_gc` (a no-op otherwise)."""
    from .events import RunStarted

    def on_event(event: Any) -> None:
        global _gc_paused
        if isinstance(event, RunStarted) and _gc_paused:
            _gc_paused = False
            gc.freeze()  # start-up's objects (modules, packs, torch) live for the process: not the collector's job
            gc.enable()
        listener(event)

    return on_event


def _main(args: argparse.Namespace) -> int:
    _log_to_stderr()
    if args.command is None:
        args = _parser().parse_args(["gui"])
    from .threads import ThreadsError, prefer_passive_wait, requested_threads

    prefer_passive_wait()  # before anything imports torch: idle OpenMP threads sleep instead of spinning
    try:
        if args.command in ("run", "batch", "serve", "gui"):
            requested_threads(None)  # a bad NODEGRAPH_THREADS is reported now, not in the middle of a run
    except ThreadsError as exc:
        _err(f"{exc} (environment variable)")
        return EXIT_INVALID
    try:
        commands = {"run": _cmd_run, "validate": _cmd_validate, "nodes": _cmd_nodes, "gui": _cmd_gui,
                    "batch": _cmd_batch, "serve": _cmd_serve, "export-comfy": _cmd_export_comfy}
        return commands[args.command](args)
    except BrokenPipeError:  # `nodegraph nodes | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl+C outside a run (a run installs its own handler and stops cleanly)
        _err("interrupted")
        return EXIT_RUN_ERROR
    except OSError as exc:  # the disk or the OS refused (full disk, permissions changed mid-run...)
        where = f"{exc.filename}: " if exc.filename else ""
        _err(f"{where}{exc.strerror or exc} -> check that the path exists and is writable, and that the disk "
             "has room")
        return EXIT_RUN_ERROR


def _err(msg: str) -> None:
    print(f"nodegraph: {msg}", file=sys.stderr)


# How each path option is spelled on the command line, for messages.
_FLAGS = {"output_dir": "-o/--output-dir", "report": "--report", "output": "-o/--output"}


def _path_problems(args: argparse.Namespace, folders: Sequence[str] = (), files: Sequence[str] = ()) -> bool:
    """Report every ``args`` path that cannot be written (``folders``: output folders, ``files``: single
    files such as ``--report``) and return whether there was one.  Checked before any work, so a typo in
    ``-o`` costs nothing instead of failing in the Save node after the whole graph ran."""
    from .fileio import unwritable_reason

    bad = False
    for dest, directory in [(d, True) for d in folders] + [(f, False) for f in files]:
        value = getattr(args, dest, None)
        if value is None:
            continue
        reason = unwritable_reason(value, directory=directory)
        if reason is not None:
            flag = _FLAGS.get(dest, f"--{dest.replace('_', '-')}")
            what = "an output folder (created if missing)" if directory else "a file path in a writable folder"
            _err(f"{flag} {value!r}: {reason} -> choose {what}")
            bad = True
    return bad


def _device_problem(name: str, *, check_available: bool = True) -> str | None:
    """Why ``--device name`` cannot be used, or ``None``.  The syntax is always checked; for an
    explicit accelerator (cuda, cuda:N, mps) also its presence, which imports torch (that run needs it
    anyway), so ``--device cuda`` on a machine without CUDA is refused before loading a model."""
    from .device import DeviceError, check_device_name, resolve_device

    try:
        check_device_name(name)
        if check_available and name not in ("auto", "cpu"):
            resolve_device(name)
    except DeviceError as exc:
        return f"--device {name}: {exc}"
    except ImportError as exc:
        return f"--device {name} needs torch, which cannot be imported ({exc}) -> run scripts/setup.sh"
    return None


def _settings(args: argparse.Namespace) -> dict[str, object]:
    settings: dict[str, object] = {}
    if getattr(args, "models_dir", None):
        settings["models_dir"] = str(Path(args.models_dir).resolve())
    if getattr(args, "cache_budget", None):
        settings["cache_budget"] = args.cache_budget  # read by every Executor the command makes
    if getattr(args, "workflow", None):
        # Relative input paths inside a shipped workflow resolve next to the file.
        settings["workflow_dir"] = str(Path(args.workflow).resolve().parent)
    if getattr(args, "threads", None) is not None:
        settings["threads"] = args.threads
    if getattr(args, "vram_budget", None):
        settings["vram_budget"] = args.vram_budget
    return settings


def _load(args: argparse.Namespace, registry: object) -> object | None:
    """Read the workflow (ours or ComfyUI's; import notes go to stderr) and apply ``--set``."""
    from .errors import OverrideError, WorkflowFileError
    from .open import open_any
    from .overrides import apply_overrides

    try:
        graph, notes = open_any(args.workflow, registry)  # type: ignore[arg-type]
        if notes:  # a ComfyUI import: also say which model files are not in our folders
            from .comfy import describe_missing, missing_models

            notes += describe_missing(missing_models(graph, registry, _settings(args)))  # type: ignore[arg-type]
        for note in notes:
            _err(note)
        apply_overrides(graph, registry, args.overrides)  # type: ignore[arg-type]
    except WorkflowFileError as exc:  # its message already starts with the file name
        _err(str(exc))
        return None
    except OverrideError as exc:
        _err(f"{args.workflow}: {exc}")
        return None
    return graph


def _registry(args: argparse.Namespace | None = None) -> object:
    from .registry import Registry

    reg = Registry.with_installed_packs()
    for pack, error in reg.pack_errors.items():
        _err(f"warning: node pack {pack!r} failed to load: {error}")
    reg.load_default_subgraphs(getattr(args, "workflow", None))  # subgraphs/ component folders
    for path, error in reg.subgraph_errors.items():
        _err(f"warning: subgraph component {path} not loaded: {error}")
    return reg


def _cmd_validate(args: argparse.Namespace) -> int:
    from .plan import validate

    registry = _registry(args)
    graph = _load(args, registry)
    if graph is None:
        return EXIT_INVALID
    issues = validate(graph, registry, scope="all" if args.all else "needed",  # type: ignore[arg-type]
                      settings=_settings(args))
    if args.json:
        print(json.dumps({"valid": not issues, "problems": [i.to_dict() for i in issues]}, indent=2))
    elif issues:
        _err(f"{args.workflow}: {len(issues)} problem(s):")
        for i in issues:
            print(f"  - {i}", file=sys.stderr)
    else:
        print(f"{args.workflow}: valid")
    return EXIT_INVALID if issues else EXIT_OK


def _cmd_export_comfy(args: argparse.Namespace) -> int:
    from .comfy import ComfyExportError, export_comfy_api
    from .fileio import atomic_write_text

    if _path_problems(args, files=["output"]):
        return EXIT_INVALID
    registry = _registry(args)
    graph = _load(args, registry)
    if graph is None:
        return EXIT_INVALID
    try:
        result = export_comfy_api(graph, registry)  # type: ignore[arg-type]
    except ComfyExportError as exc:
        _err(f"{args.workflow}: {exc}")
        return EXIT_INVALID
    for warning in result.warnings:
        _err(f"warning: {warning}")
    atomic_write_text(args.output, json.dumps(result.prompt, indent=2) + "\n")
    print(args.output)
    return EXIT_OK


def _cmd_nodes(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.json:
        print(json.dumps(registry.catalogue(_settings(args)), indent=2))  # type: ignore[attr-defined]
        return EXIT_OK
    for category, specs in registry.categories().items():  # type: ignore[attr-defined]
        print(category)
        for s in specs:
            ins = ", ".join(f"{i.name}:{i.type}" for i in s.inputs)
            outs = ", ".join(f"{o.name}:{o.type}" for o in s.outputs)
            print(f"  {s.type_id:<34} ({ins}) -> ({outs})")
    return EXIT_OK


def _cmd_gui(args: argparse.Namespace) -> int:
    try:
        from gui.app import main as gui_main
    except ImportError as exc:
        _err(f"the desktop editor is not available ({exc}); install it with: pip install -e '.[gui]'")
        return EXIT_INVALID
    argv = [args.workflow] if args.workflow else []
    if args.models_dir:
        argv += ["--models-dir", args.models_dir]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.cache_budget:
        argv += ["--cache-budget", args.cache_budget]
    if args.vram_budget:
        argv += ["--vram-budget", args.vram_budget]
    return int(gui_main(argv))


def _cmd_run(args: argparse.Namespace) -> int:
    from .context import CancelToken
    from .errors import WorkflowInvalid
    from .executor import Executor
    from .fileio import atomic_write_text
    from .progress import TerminalProgress

    if _path_problems(args, folders=["output_dir"], files=["report"]):
        return EXIT_INVALID
    problem = _device_problem(args.device)
    if problem:
        _err(problem)
        return EXIT_INVALID
    registry = _registry(args)
    graph = _load(args, registry)
    if graph is None:
        return EXIT_INVALID
    executor = Executor(registry, device=args.device, output_dir=args.output_dir,  # type: ignore[arg-type]
                        settings=_settings(args))
    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())  # Ctrl+C stops between steps
    progress = TerminalProgress(enabled=None if not args.quiet else False)
    try:
        report = executor.run(graph, outputs=args.targets, on_event=_resume_gc_when_run_starts(progress),
                              cancel=cancel)  # type: ignore[arg-type]
    except WorkflowInvalid as exc:
        _err(f"{args.workflow}: {len(exc.issues)} problem(s), nothing was run:")
        for i in exc.issues:
            print(f"  - {i}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.report:
        atomic_write_text(args.report, json.dumps(report.to_dict(), indent=2) + "\n")
    if report.status == "cancelled":
        _err("run cancelled")
        return EXIT_RUN_ERROR
    if report.error is not None:
        e = report.error
        where = f"node {e.node_id!r} ({e.node_type})" + (f", input {e.input!r}" if e.input else "")
        _err(f"{where} failed: {e.message}")
        return EXIT_RUN_ERROR
    executed, cached = len(report.executed()), len(report.cached())
    print(f"done in {report.seconds:.2f}s ({executed} executed, {cached} cached)", file=sys.stderr)
    for name, data in report.stats.items():  # e.g. "memory: device 1.2 GiB / 4 GiB (peak ...)"
        if data.get("line"):
            print(f"{name}: {data['line']}", file=sys.stderr)
    for path in report.outputs:
        print(path)
    for nid, ui in report.ui.items():
        if "text" in ui and not ui.get("files"):
            print(f"{nid}: {ui['text']}")
    return EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import MANIFEST_NAME, BatchInvalid, BatchOptions, ManifestMismatch, SweepError, prepare, run_batch
    from .context import CancelToken

    if _path_problems(args, folders=["output_dir"]):
        return EXIT_INVALID
    # On Ray the workers' machines decide what exists; here only the name is checked.
    problem = _device_problem(args.device, check_available=args.ray is None)
    if problem:
        _err(problem)
        return EXIT_INVALID
    if args.workers is not None and args.workers < 1:
        _err("--workers must be at least 1")
        return EXIT_INVALID
    out_dir = Path(args.output_dir)
    if args.resume and not (out_dir / MANIFEST_NAME).exists():
        _err(f"--resume: no {MANIFEST_NAME} in {out_dir} to resume")
        return EXIT_INVALID
    registry = _registry(args)
    graph = _load(args, registry)
    if graph is None:
        return EXIT_INVALID
    cancel = CancelToken()
    options = BatchOptions(mode=args.mode or "grid", output_dir=out_dir, targets=args.targets, fresh=args.fresh,
                           workflow_path=str(Path(args.workflow).resolve()), settings=_settings(args),
                           registry=registry, progress=False if args.quiet else None,  # type: ignore[arg-type]
                           cancel=cancel)
    try:
        plan = prepare(graph, args.sweeps, registry, options)  # type: ignore[arg-type]
    except (SweepError, BatchInvalid) as exc:
        _err(f"{args.workflow}: {exc}")
        return EXIT_INVALID
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())  # Ctrl+C: stop after a step
    try:
        if args.ray is not None:
            from .distributed import RayOptions, RayUnavailable, run_batch_ray

            cluster = RayOptions(address=None if args.ray == "local" else args.ray, workers=args.workers)
            try:
                result = run_batch_ray(graph, [], options, cluster, plan=plan,  # type: ignore[arg-type]
                                       device="cpu" if args.device == "auto" else args.device)
            except RayUnavailable as exc:
                _err(str(exc))
                return EXIT_INVALID
        else:
            result = run_batch(graph, [], options, plan=plan, device=args.device)  # type: ignore[arg-type]
    except ManifestMismatch as exc:
        _err(str(exc))
        return EXIT_INVALID
    finally:
        signal.signal(signal.SIGINT, previous)
    counts = result.manifest["counts"]
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"batch: {len(result.manifest['items'])} items ({summary}; {len(result.skipped)} resumed) in "
          f"{result.seconds:.2f}s; manifest: {result.manifest_path}", file=sys.stderr)
    for entry in result.failed:
        err = entry.get("error") or {}
        where = f"node {err['node_id']!r}" if err.get("node_id") else ""
        where += f", input {err['input']!r}" if err.get("input") else ""
        where += ": " if where else ""
        print(f"  - item {entry['index']} ({entry['name']}) {entry['status']}: {where}"
              f"{err.get('message', '')}".rstrip(": "), file=sys.stderr)
    if result.cancelled:
        _err("batch cancelled; run the same command again to resume")
    return EXIT_OK if result.ok else EXIT_RUN_ERROR


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    if _path_problems(args, folders=["output_dir"]):
        return EXIT_INVALID
    problem = _device_problem(args.device)
    if problem:
        _err(problem)
        return EXIT_INVALID
    from .server.security import hosts_from

    if args.token is not None and not args.token.strip():
        _err("--token needs a value (or 'auto')")
        return EXIT_INVALID
    settings = _settings(args)
    if args.input_dir:
        settings["input_dir"] = str(Path(args.input_dir).resolve())
    return serve(host=args.host, port=args.port, output_dir=args.output_dir, device=args.device,
                 settings=settings, token=args.token,
                 token_file=Path(args.token_file) if args.token_file else None,
                 allowed_hosts=hosts_from(args.allow_hosts))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
