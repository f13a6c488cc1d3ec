"""Batch sweeps: run one workflow many times over a grid (or zip) of input values.

Sweeps (``sampler.seed=1..100``, ``positive.text=@prompts.txt``, ``sampler.cfg=4,5,6``;
see :mod:`nodegraph.sweep`) combine as a grid (cartesian product, the first sweep
varying slowest, like nested loops) or, with ``mode="zip"``, element by element.

Why it is built the way it is:

* **one long-lived executor** runs every item, so the result cache turns work the
  items share (loading the checkpoint, encoding an unchanged prompt) into cache
  hits: the loader executes once for the whole batch;
* **everything is validated before anything runs**: every item's overrides are
  applied and planned up front, so a typo in item 97 fails in a second, not
  after an hour of sampling;
* **outputs are named by their parameters**: each save node's ``filename_prefix``
  becomes ``<prefix>_<name>`` with ``name`` like ``seed=7_cfg=5.0`` (sanitised to
  a flat file name, so it cannot leave the output folder);
* **a manifest** (``manifest.json`` in the output folder, rewritten atomically after
  every item) lists every item: index, name, the exact (type-converted)
  parameters, status, output files (relative to the folder), seconds and error;
* **resumable**: re-running the same batch into the same folder skips the items
  whose manifest entry is ``ok`` and whose files all still exist.  A manifest made
  for a different workflow is refused rather than mixed with (pass ``fresh=True``
  to start over in the same folder);
* **one failing item does not stop the batch**: its error is recorded and the
  next item runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

from .context import CancelToken
from .errors import NodegraphError, OverrideError, WorkflowInvalid
from .events import Event, EventListener, NodeProgress, NodeStarted, NodeStats
from .executor import Executor, RunReport
from .fileio import atomic_write_text
from .graph import Graph
from .outputs import glob_escape
from .overrides import apply_overrides, override_input, value_key
from .plan import build_plan
from .registry import Registry
from .spec import Widget
from .subgraph import flatten, has_instances
from .sweep import Sweep, SweepError, expand, parse_sweep, parse_sweeps, parse_values
from .workflow import to_dict

__all__ = [
    "MANIFEST_NAME", "BatchInvalid", "BatchItem", "BatchOptions", "BatchPlan", "BatchProgress", "BatchResult",
    "ItemOutcome", "Manifest", "ManifestMismatch", "Sweep", "SweepError", "expand", "item_name", "manifest_core",
    "open_manifest", "parse_sweep", "parse_sweeps", "parse_values", "prepare", "run_batch", "run_item",
]

MANIFEST_NAME = "manifest.json"
_ORPHAN_NAME = re.compile(r"_\d{5}\.[A-Za-z0-9]+")  # what confined_path appends to a prefix
MANIFEST_FORMAT = "nodegraph.batch"
MANIFEST_VERSION = 1
# Fields of a manifest that legitimately differ between two runs of the same batch.
VOLATILE_ITEM_KEYS = ("seconds", "node_seconds")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=+-]+")
_MAX_SLUG = 32


class BatchInvalid(NodegraphError):
    """Some items cannot run; nothing was run.  ``problems`` lists each distinct problem
    once with the items it affects: ``{"items": [indices], "message": str, "issue": dict | None}``."""

    def __init__(self, problems: Sequence[Mapping[str, Any]]) -> None:
        self.problems = [dict(p) for p in problems]
        lines = []
        for p in self.problems:
            lines.append(f"  - {p['message']} ({_describe_items(p['items'])})")
        super().__init__(f"batch is invalid ({len(self.problems)} problem(s), nothing was run):\n"
                         + "\n".join(lines))


class ManifestMismatch(NodegraphError):
    """The output folder holds a manifest of another batch (different workflow)."""


# -- prepared items ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItem:
    """One validated item: ``overrides`` hold the values as converted by the inputs' types
    (exactly what runs); ``prefixes`` the save nodes' per-item ``filename_prefix``."""

    index: int
    name: str
    overrides: dict[str, Any]
    prefixes: dict[str, str] = field(default_factory=dict)

    def all_overrides(self) -> dict[str, Any]:
        out = dict(self.overrides)
        out.update({f"{nid}.filename_prefix": p for nid, p in self.prefixes.items()})
        return out


@dataclass
class BatchPlan:
    """A validated batch: the base graph, its items, and what identifies it on disk."""

    graph: Graph
    sweeps: list[Sweep]
    mode: str
    items: list[BatchItem]
    workflow_hash: str
    workflow_path: str | None = None

    def graph_for(self, item: BatchItem, registry: Registry) -> Graph:
        g = self.graph.copy()
        apply_overrides(g, registry, item.all_overrides())
        return g


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch -- everything but the workflow and its sweeps, in one object that
    :func:`prepare`, :func:`run_batch` and :func:`nodegraph.distributed.run_batch_ray` share.

    ``mode``: "grid" (every combination) or "zip" (element by element).  ``output_dir`` holds
    the files and ``manifest.json``; ``fresh`` starts over instead of resuming.  ``targets``:
    the output nodes to run (default: all).  ``base_dir``: where ``@FILE`` sweeps are read from;
    ``workflow_path`` is recorded in the manifest.  ``settings``/``device``/``registry`` build the
    executor(s) (``device`` None: "auto" locally, "cpu" on Ray workers; ``registry`` None: the
    installed packs), unless ``executor`` (local runs) is given, whose cache then carries over.
    ``progress``: None = a bar on a TTY, True/False, or a :class:`BatchProgress`.  ``cancel``
    stops after the running step; ``on_item(item, manifest_entry)`` runs after each item.
    """

    mode: str = "grid"
    output_dir: str | Path = "output"
    targets: Sequence[str] | None = None
    fresh: bool = False
    base_dir: str | Path | None = None
    workflow_path: str | None = None
    settings: Mapping[str, Any] | None = None
    device: str | None = None
    registry: Registry | None = None
    executor: Executor | None = None
    progress: BatchProgress | bool | None = None
    cancel: CancelToken | None = None
    on_item: ItemCallback | None = None

    def with_changes(self, changes: Mapping[str, Any]) -> BatchOptions:
        """A copy with single fields replaced (keyword arguments of the batch functions);
        an unknown name is a TypeError naming it."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown batch option(s) {unknown}; see BatchOptions")
        return replace(self, **changes) if changes else self


def _slug(value: Any) -> str:
    """A short file-name-safe rendering of a value; long or altered text gets a hash suffix
    so two different values never share a name."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    slug = _SAFE_NAME.sub("-", text).strip("-.") or "empty"
    if slug != text or len(slug) > _MAX_SLUG:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=3).hexdigest()
        slug = f"{slug[:_MAX_SLUG - 7].rstrip('-.')}-{digest}"
    return slug


def item_name(overrides: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """``{"sampler.seed": 7, "sampler.cfg": 5.0}`` -> ``"seed=7_cfg=5.0"``."""
    if not overrides:
        return "item"
    return "_".join(f"{labels[k]}={_slug(v)}" for k, v in overrides.items())


def _labels(sweeps: Sequence[Sweep]) -> dict[str, str]:
    names = [s.input for s in sweeps]
    return {s.key: (s.input if names.count(s.input) == 1 else s.key) for s in sweeps}


def _prefix_nodes(graph: Graph, registry: Registry) -> dict[str, str]:
    """Save-like nodes (an unlinked ``filename_prefix`` text input) and their current prefix --
    also inside subgraphs (path ids such as ``outer/save``), so every item's files are named."""
    out = {}
    if has_instances(graph):
        graph = flatten(graph, registry).graph
    for n in graph:
        spec = registry.get(n.type)
        inp = spec.input("filename_prefix") if spec is not None else None
        if inp is None or inp.widget is not Widget.STRING or graph.link_into(n.id, "filename_prefix") is not None:
            continue
        out[n.id] = str(n.values.get("filename_prefix", inp.default or "output"))
    return out


def workflow_hash(graph: Graph) -> str:
    doc = to_dict(graph)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def prepare(
    graph: Graph,
    sweeps: Mapping[str, Any] | Iterable[str | Sweep],
    registry: Registry,
    options: BatchOptions | None = None,
    **changes: Any,
) -> BatchPlan:
    """Parse, expand and validate every item; raises :class:`SweepError` or
    :class:`BatchInvalid` (listing every distinct problem) before any work.

    Reads ``mode``, ``settings``, ``output_dir``, ``targets``, ``base_dir`` and
    ``workflow_path`` of ``options``; keyword arguments override single options."""
    o = (options or BatchOptions()).with_changes(changes)
    mode, settings, targets, workflow_path = o.mode, o.settings, o.targets, o.workflow_path
    parsed = parse_sweeps(sweeps, base_dir=o.base_dir)
    raw_items = expand(parsed, mode)
    labels = _labels(parsed)
    save_nodes = _prefix_nodes(graph, registry)
    out_dir = str(Path(o.output_dir).resolve())
    problems: dict[str, dict[str, Any]] = {}

    def problem(index: int, message: str, issue: dict[str, Any] | None = None) -> None:
        entry = problems.setdefault(message, {"items": [], "message": message, "issue": issue})
        entry["items"].append(index)

    items: list[BatchItem] = []
    names: dict[str, int] = {}
    plan_memo: dict[str, list[Any]] = {}
    for index, raw in enumerate(raw_items):
        g = graph.copy()
        try:
            apply_overrides(g, registry, raw)
        except OverrideError as exc:
            for line in str(exc).splitlines()[1:] or [str(exc)]:
                problem(index, line.strip().removeprefix("- "))
            continue
        coerced = {k: _stored(g, k) for k in raw}
        name = item_name(coerced, labels)
        if name in names:  # the same values twice (e.g. a repeated prompt line)
            names[name] += 1
            name = f"{name}_{names[name]}"
        else:
            names[name] = 1
        prefixes = {}
        for nid, base in save_nodes.items():
            holder, key = value_key(nid, "filename_prefix")
            own = g.nodes[holder].values.get(key, base)
            prefixes[nid] = f"{own}_{name}" if raw else str(own)
        try:
            apply_overrides(g, registry, {f"{nid}.filename_prefix": p for nid, p in prefixes.items()})
        except OverrideError as exc:
            problem(index, str(exc))
            continue
        # Items differing only in values that planning cannot reject (seeds, text) plan alike:
        # plan each distinct combination of the other values once.
        ranged = [m for k, v in coerced.items() if (m := _range_problem(registry, g, k, v))]
        for message in ranged:
            problem(index, message)
        memo_key = json.dumps({k: v for k, v in coerced.items()
                               if _needs_plan(registry, g, k)}, sort_keys=True, default=str)
        if memo_key not in plan_memo:
            try:
                build_plan(g, registry, targets, output_dir=out_dir, settings=settings)
                plan_memo[memo_key] = []
            except WorkflowInvalid as exc:
                plan_memo[memo_key] = list(exc.issues)
        for issue in plan_memo[memo_key]:
            problem(index, str(issue), issue.to_dict())
        items.append(BatchItem(index, name, coerced, prefixes))
    if problems:
        raise BatchInvalid(list(problems.values()))
    return BatchPlan(graph.copy(), parsed, mode, items, workflow_hash(graph), workflow_path)


def _stored(g: Graph, key: str) -> Any:
    """The coerced value ``apply_overrides`` stored for ``key`` (inner nodes: on the instance)."""
    holder, name = value_key(*key.rpartition(".")[::2])
    return g.nodes[holder].values[name]


def _needs_plan(registry: Registry, g: Graph, key: str) -> bool:
    """Whether a value can make planning fail beyond coercion and a range check: choices
    (a COMBO such as a model name) and anything a node's fingerprint inspects (files)."""
    nid, _, name = key.rpartition(".")
    node_type, inp = override_input(g, registry, nid, name)
    spec = registry.get(node_type) if node_type is not None else None
    if spec is not None and spec.fingerprint is not None:
        return True
    return inp is None or inp.widget not in (Widget.STRING, Widget.BOOL, Widget.INT, Widget.FLOAT, Widget.SEED)


def _range_problem(registry: Registry, g: Graph, key: str, value: Any) -> str | None:
    nid, _, name = key.rpartition(".")
    node_type, inp = override_input(g, registry, nid, name)
    if inp is None or inp.widget not in (Widget.INT, Widget.FLOAT, Widget.SEED):
        return None
    if (inp.min is not None and value < inp.min) or (inp.max is not None and value > inp.max):
        return (f"node {nid!r} ({node_type}) input {name!r}: value {value} is outside "
                f"[{inp.min}, {inp.max}]")
    return None


# -- manifest --------------------------------------------------------------------------------------


def _describe_items(indices: Sequence[int]) -> str:
    if len(indices) == 1:
        return f"item {indices[0]}"
    runs: list[str] = []
    start = prev = indices[0]
    for i in list(indices[1:]) + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    shown = ", ".join(runs[:8]) + (", ..." if len(runs) > 8 else "")
    return f"{len(indices)} items: {shown}"


@dataclass
class ItemOutcome:
    """What running one item produced (picklable: it crosses process boundaries under Ray)."""

    status: str  # ok | error | cancelled
    outputs: list[str]  # relative to the output folder, '/'-separated
    seconds: float
    node_seconds: float
    error: dict[str, Any] | None = None
    executed: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None


class Manifest:
    """``manifest.json``: the batch header plus one entry per item, rewritten atomically."""

    def __init__(self, path: Path, plan: BatchPlan) -> None:
        self.path = path
        self.plan = plan
        self.entries: list[dict[str, Any]] = [self._pending(item) for item in plan.items]

    @staticmethod
    def _pending(item: BatchItem) -> dict[str, Any]:
        return {"index": item.index, "name": item.name, "overrides": dict(item.overrides),
                "prefixes": dict(item.prefixes), "status": "pending", "outputs": [], "seconds": None,
                "node_seconds": None, "error": None}

    def header(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "workflow": {"path": self.plan.workflow_path, "sha256": self.plan.workflow_hash},
            "mode": self.plan.mode,
            "sweeps": [{"key": s.key, "spec": s.spec, "count": len(s.values)} for s in self.plan.sweeps],
            "total": len(self.plan.items),
        }

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        return {**self.header(), "counts": counts, "items": self.entries}

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    def record(self, position: int, outcome: ItemOutcome) -> dict[str, Any]:
        entry = self.entries[position]
        entry.update(status=outcome.status, outputs=list(outcome.outputs), seconds=round(outcome.seconds, 4),
                     node_seconds=round(outcome.node_seconds, 4), error=outcome.error)
        return entry

    def adopt_previous(self, *, fresh: bool) -> list[int]:
        """Carry over finished entries of an earlier run of this batch; returns the positions
        that are already done (status ok and every output file present)."""
        if fresh or not self.path.exists():
            return []
        try:
            old = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestMismatch(f"{self.path}: cannot read the existing manifest ({exc}); "
                                   "use another output folder or start fresh") from None
        if not isinstance(old, dict) or old.get("format") != MANIFEST_FORMAT:
            raise ManifestMismatch(f"{self.path} is not a nodegraph batch manifest")
        if (old.get("workflow") or {}).get("sha256") != self.plan.workflow_hash:
            raise ManifestMismatch(
                f"{self.path} belongs to a batch of a different workflow; use another output folder, "
                "or start fresh (--fresh) to run this batch there anyway")
        root = self.path.parent
        previous = {}
        for e in old.get("items", []):
            if isinstance(e, dict) and "name" in e:
                previous[(e["name"], _canon(e.get("overrides")))] = e
        done = []
        for pos, entry in enumerate(self.entries):
            e = previous.get((entry["name"], _canon(entry["overrides"])))
            if e is None or e.get("status") != "ok":
                continue
            outputs = [str(o) for o in e.get("outputs", [])]
            if all((root / o).is_file() for o in outputs):
                entry.update(status="ok", outputs=outputs, seconds=e.get("seconds"),
                             node_seconds=e.get("node_seconds"), error=None)
                done.append(pos)
        done += self._adopt_orphans(previous, set(done))
        return sorted(done)

    def _adopt_orphans(self, previous: Mapping[tuple[str, str], Mapping[str, Any]], done: set[int]) -> list[int]:
        """Items killed between writing their files and recording them: the manifest still says
        "pending", but every save node of the item left ``<prefix>_NNNNN.<ext>`` files no other entry
        claims.  Adopt those files instead of running the item again (which would write duplicates)."""
        root = self.path.parent
        claimed = {o for e in self.entries for o in e["outputs"]}
        adopted = []
        for pos, entry in enumerate(self.entries):
            old = previous.get((entry["name"], _canon(entry["overrides"])))
            if pos in done or old is None or old.get("status") != "pending" or not entry["prefixes"]:
                continue
            found: list[str] = []
            for prefix in entry["prefixes"].values():
                files = sorted(p.relative_to(root).as_posix() for p in root.glob(f"{glob_escape(prefix)}_*.*")
                               if _ORPHAN_NAME.fullmatch(p.name[len(Path(prefix).name):]) and p.is_file())
                files = [f for f in files if f not in claimed]
                if not files:
                    break
                found += files
            else:
                entry.update(status="ok", outputs=found, seconds=None, node_seconds=None, error=None)
                claimed.update(found)
                adopted.append(pos)
        return adopted


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def manifest_core(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest without its timings: what two runs of the same batch must agree on."""
    out = dict(doc)
    out["items"] = [{k: v for k, v in e.items() if k not in VOLATILE_ITEM_KEYS} for e in doc.get("items", [])]
    return out


# -- running ------------------------------------------------------------------------------------------


def relative_outputs(report: RunReport, out_dir: Path) -> list[str]:
    root = out_dir.resolve()
    rel = []
    for p in report.outputs:
        path = Path(p).resolve()
        try:
            rel.append(path.relative_to(root).as_posix())
        except ValueError:
            rel.append(str(path))
    return rel


def outcome_of(report: RunReport, out_dir: Path, seconds: float) -> ItemOutcome:
    """Summarise a run report as an item outcome (node time = time inside executed nodes)."""
    node_seconds = sum(r.seconds for r in report.nodes.values() if r.status in ("executed", "error"))
    error = None
    if report.error is not None:
        e = report.error
        error = {"node_id": e.node_id, "node_type": e.node_type, "input": e.input, "message": e.message}
    status = {"ok": "ok", "error": "error", "cancelled": "cancelled"}.get(report.status, report.status)
    return ItemOutcome(status, relative_outputs(report, out_dir), seconds, node_seconds, error,
                       report.executed(), report.to_dict())


def run_item(executor: Executor, plan: BatchPlan, item: BatchItem, out_dir: Path, *,
             targets: Sequence[str] | None = None, cancel: CancelToken | None = None,
             on_event: EventListener | None = None) -> ItemOutcome:
    """Run one item on ``executor`` (whose cache persists across items).  Never raises for
    a failing item: the failure is the outcome."""
    t0 = time.perf_counter()
    try:
        graph = plan.graph_for(item, executor.registry)
        report = executor.run(graph, outputs=targets, on_event=on_event, cancel=cancel, output_dir=out_dir)
    except (WorkflowInvalid, OverrideError) as exc:  # e.g. a model file deleted mid-batch
        return ItemOutcome("error", [], time.perf_counter() - t0, 0.0,
                           {"node_id": None, "node_type": None, "input": None, "message": str(exc)})
    return outcome_of(report, out_dir, time.perf_counter() - t0)


@dataclass
class BatchResult:
    """What :func:`run_batch` did.  ``outcomes`` holds the items run in this call
    (skipped ones are absent), keyed by item index."""

    manifest_path: Path
    manifest: dict[str, Any]
    outcomes: dict[int, ItemOutcome]
    skipped: list[int]
    seconds: float
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.cancelled and all(e["status"] == "ok" for e in self.manifest["items"])

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [e for e in self.manifest["items"] if e["status"] not in ("ok",)]


#: Width of the batch status line (it overwrites itself, so it is padded to this width).
LINE_WIDTH = 200


class BatchProgress:
    """One self-overwriting status line over the whole batch (drawn only on a TTY):
    items done, the item running, its current node step, an ETA, and the last line of each
    statistic nodes publish (e.g. a pack's device-memory line)."""

    def __init__(self, total: int, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.done = 0
        self.failed = 0
        self.current = ""
        self.node = ""
        self._t0 = time.monotonic()
        self._ran = 0
        self._last = 0.0
        self.stats: dict[str, str] = {}  # last line per published statistic (NodeStats)

    def start_item(self, name: str) -> None:
        self.current, self.node = name, ""
        self._draw(force=True)

    def finish_item(self, status: str, *, skipped: bool = False) -> None:
        self.done += 1
        if not skipped:
            self._ran += 1
        if status != "ok":
            self.failed += 1
        self._draw(force=True)

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, NodeStarted):
            self.node = event.node_id
            self._draw()
        elif isinstance(event, NodeProgress):
            self.node = f"{event.node_id} {event.step}/{event.total}"
            self._draw()
        elif isinstance(event, NodeStats) and event.line:
            self.stats[event.name] = event.line
            self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        width = 24
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta = ""
        if self._ran:
            per = (now - self._t0) / self._ran
            left = per * (self.total - self.done)
            eta = f" {per:.2f}s/item eta {int(left // 60)}m{int(left % 60):02d}s"
        fail = f" {self.failed} failed" if self.failed else ""
        extra = "".join(f" | {name}: {text}" for name, text in self.stats.items())
        line = f"[{bar}] {self.done}/{self.total}{fail}{eta} {self.current} {self.node}{extra}"
        self.stream.write("\r" + line[:LINE_WIDTH].ljust(LINE_WIDTH))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * LINE_WIDTH + "\r")
            self.stream.flush()


def progress_bar(progress: BatchProgress | bool | None, total: int) -> BatchProgress:
    """``None``: a bar when stderr is a terminal; ``True``/``False``: force on/off; or a given bar."""
    if isinstance(progress, BatchProgress):
        return progress
    return BatchProgress(total, enabled=None if progress is None else bool(progress))


ItemCallback = Callable[[BatchItem, dict[str, Any]], None]


def open_manifest(plan: BatchPlan, out_dir: Path, *, fresh: bool) -> tuple[Manifest, list[int]]:
    """The batch's manifest, written before the first item, and the positions of the items a
    previous run finished (none when ``fresh``); raises :class:`ManifestMismatch` first."""
    manifest = Manifest(out_dir / MANIFEST_NAME, plan)
    skipped = manifest.adopt_previous(fresh=fresh)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.write()
    return manifest, skipped


def run_batch(
    graph: Graph,
    sweeps: Mapping[str, Any] | Iterable[str | Sweep],
    options: BatchOptions | None = None,
    *,
    plan: BatchPlan | None = None,
    **changes: Any,
) -> BatchResult:
    """Run ``graph`` once per sweep item with ONE executor; see the module docstring.

    ``options`` (:class:`BatchOptions`) says how; keyword arguments override single
    options (``run_batch(g, sweeps, output_dir="out", progress=False)``).  ``plan``: items
    already validated by :func:`prepare` (then ``sweeps`` is ignored).  Raises
    :class:`SweepError`, :class:`BatchInvalid` or :class:`ManifestMismatch` before any
    work.  Resumes automatically from ``output_dir/manifest.json`` unless ``fresh``.
    """
    o = (options or BatchOptions()).with_changes(changes)
    executor = o.executor if o.executor is not None else Executor(
        o.registry, device=o.device or "auto", output_dir=o.output_dir, settings=o.settings)
    out_dir = Path(o.output_dir)
    if plan is None:
        plan = prepare(graph, sweeps, executor.registry, o, settings=executor.settings)
    targets, on_item = o.targets, o.on_item
    manifest, skipped = open_manifest(plan, out_dir, fresh=o.fresh)
    bar = progress_bar(o.progress, len(plan.items))
    cancel = o.cancel or CancelToken()
    outcomes: dict[int, ItemOutcome] = {}
    t0 = time.perf_counter()
    skip = set(skipped)
    cancelled = False
    try:
        for pos, item in enumerate(plan.items):
            if pos in skip:
                bar.finish_item("ok", skipped=True)
                continue
            if cancel.cancelled:
                cancelled = True
                break
            bar.start_item(item.name)
            outcome = run_item(executor, plan, item, out_dir, targets=targets, cancel=cancel, on_event=bar)
            outcomes[item.index] = outcome
            entry = manifest.record(pos, outcome)
            manifest.write()
            bar.finish_item(outcome.status)
            if on_item is not None:
                on_item(item, entry)
            if outcome.status == "cancelled":
                cancelled = True
                break
    finally:
        bar.close()
    return BatchResult(manifest.path, manifest.to_dict(), outcomes, skipped, time.perf_counter() - t0, cancelled)
