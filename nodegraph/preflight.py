"""Preflight: what planning can know about results before anything runs.

Node specs may declare a ``preflight(values, upstream)`` hook (see
:class:`~nodegraph.spec.NodeSpec`).  Planning calls the hooks once per node in
topological order — a flat loop, no recursion — feeding each the
:class:`~nodegraph.spec.Estimate` of its linked inputs, so sizes propagate
down a chain (a latent upscaled three times, a text doubled forty times) and
the node whose result could not fit the machine is refused by validation,
naming the node, the input to change and how.  A node without a hook, or
whose inputs are unknown, simply yields no estimate: preflight never blocks
what it cannot judge.

The engine knows no node types here: what each node makes is its pack's
business; the engine only compares the estimates with the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import NodeInputError, ValidationIssue
from .graph import Graph
from .memory import physical_memory
from .spec import Estimate, NodeSpec, call_with_settings

# Without a configured limit a single result (or a node's working memory) may use half the RAM:
# a node holds its inputs and its output at once, and the cache and the models need the rest.
DEFAULT_FRACTION = 0.5
_FALLBACK_RAM = 16 * 1024**3  # where the OS does not report its RAM


def result_limit(settings: Mapping[str, Any] | None = None) -> int:
    """Bytes one result may take: ``settings["max_result_bytes"]``, else half the machine's RAM."""
    configured = (settings or {}).get("max_result_bytes")
    if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        return configured
    return int((physical_memory() or _FALLBACK_RAM) * DEFAULT_FRACTION)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def run_preflight(graph: Graph, order: list[str], specs: Mapping[str, NodeSpec],
                  sources: Mapping[str, Mapping[str, tuple[str, str]]], constants: Mapping[str, Mapping[str, Any]],
                  settings: Mapping[str, Any] | None = None) -> list[ValidationIssue]:
    """Call every node's preflight hook in ``order``; the issues for what would be refused."""
    limit = result_limit(settings)
    estimates: dict[str, Mapping[str, Estimate]] = {}
    issues: list[ValidationIssue] = []
    for nid in order:
        spec = specs[nid]
        if spec.preflight is None:
            continue
        node = graph.nodes[nid]
        upstream = {name: estimates.get(src, {}).get(out) for name, (src, out) in sources[nid].items()}
        try:
            result = call_with_settings(spec.preflight, settings, constants[nid], upstream)
        except NodeInputError as exc:
            issues.append(ValidationIssue("bad_value", exc.message, exc.fix or "change the value", nid, node.type,
                                          exc.input))
            continue
        except Exception:  # noqa: BLE001 - a pack's estimate bug must not block runs it cannot judge
            continue
        if not result:
            continue
        # Downstream nodes of a refused one get no estimate: the problem is reported once, where it starts.
        estimates[nid] = {k: v for k, v in result.items() if max(v.bytes, v.work) <= limit}
        for out, est in result.items():
            need = max(est.bytes, est.work)
            if need > limit:
                what = f"output {out!r}" if est.bytes >= est.work else f"making output {out!r}"
                issues.append(ValidationIssue(
                    "too_large", f"{what} would need about {human_bytes(need)}, more than the "
                    f"{human_bytes(limit)} one result may use on this machine",
                    est.fix or "reduce the sizes feeding this node (width, height, batch size, scale, repeats)",
                    nid, node.type, est.input))
                break
    return issues
