"""The HTTP API as ONE route table.

Each :class:`Route` carries its method, path template, handler and its
documentation (summary, request schema, responses).  The dispatcher and the
OpenAPI document (:mod:`nodegraph.server.openapi`) are both generated from
:data:`ROUTES`, so the documented API cannot drift from the served one.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import OverrideError, WorkflowFileError, WorkflowInvalid
from ..overrides import apply_overrides
from ..subgraph import SEP as SUBGRAPH_SEP
from ..workflow import from_dict
from .limits import BadRequest, bound_problems, clip, load_json
from .runs import QueueFull

if TYPE_CHECKING:
    from .app import Api

log = logging.getLogger("nodegraph.server")


@dataclass
class Request:
    params: dict[str, str]
    body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able, or bytes with content_type
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[], Iterator[bytes]] | None = None  # for Server-Sent Events


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    return Response(status, {"error": code, "message": message, **extra})


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # template: /runs/{id}
    handler: Callable[[Api, Request], Response]
    summary: str
    responses: dict[int, tuple[str, str | None]]  # status -> (description, schema name or None)
    request_schema: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # path parameter -> "string" | "integer"
    content_type: str = "application/json"  # of the success response

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.lstrip("_")

    def compile(self) -> re.Pattern[str]:
        pattern = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", self.path)
        return re.compile(f"^{pattern}$")


# -- handlers ---------------------------------------------------------------------------------------


def _index(api: Api, req: Request) -> Response:
    from .. import __version__

    return Response(200, {"name": "nodegraph", "version": __version__, "openapi": "/openapi.json",
                          "routes": [f"{r.method} {r.path}" for r in ROUTES]})


def _openapi(api: Api, req: Request) -> Response:
    from .openapi import openapi_document

    return Response(200, openapi_document(ROUTES))


def _list_nodes(api: Api, req: Request) -> Response:
    return Response(200, {"nodes": api.redact.value(api.registry.catalogue(api.executor.settings))})


def _problem(kind: str, message: str, fix: str, node_id: str | None = None, node_type: str | None = None,
             input: str | None = None) -> dict[str, Any]:
    path = None if node_id is None else f"{node_id}.{input}" if input else node_id
    return {"kind": kind, "node_id": node_id, "node_type": node_type, "input": input, "path": path,
            "message": message, "fix": fix}


def _parse_run_request(api: Api, req: Request) -> tuple[dict[str, Any], dict[str, Any], list[str] | None]:
    """(workflow, overrides, outputs) of a POST /runs body, within the limits; else :class:`BadRequest`."""
    limits = api.limits
    body = load_json(req.body, limits.max_depth)
    if not isinstance(body, dict) or not isinstance(body.get("workflow"), dict):
        raise BadRequest('body must be {"workflow": {...}, "overrides": {...}, "outputs": [...]}')
    overrides = body.get("overrides")
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict):
        raise BadRequest('"overrides" must be an object {"node.input": value}')
    if len(overrides) > limits.max_overrides:
        raise BadRequest(f'"overrides" has {len(overrides)} entries; at most {limits.max_overrides} are accepted')
    targets = body.get("outputs")
    if targets is not None:
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise BadRequest('"outputs" must be a list of node ids')
        targets = list(dict.fromkeys(targets))  # a repeated id is one request
        if len(targets) > limits.max_outputs:
            raise BadRequest(f'"outputs" names {len(targets)} nodes; at most {limits.max_outputs} are accepted')
    return body["workflow"], overrides, targets


def _override_problems(api: Api, graph: Any, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply the overrides one at a time, in place (no copy of the graph per override: linear),
    so each problem names its node and input.  A valid override is applied as it is checked."""
    problems = []
    for key, value in overrides.items():
        node_id, _, name = str(key).rpartition(".")
        # "outer/inner.input" reaches a node inside a subgraph instance: apply_overrides follows the
        # path (and names a wrong inner id); only the top-level node must exist here.
        node = graph.nodes.get(node_id.split(SUBGRAPH_SEP, 1)[0])
        if node is None:
            problems.append(_problem("bad_override", f"no node {node_id!r} in this workflow",
                                     "use one of the workflow's node ids before the dot", node_id or None, None,
                                     name or None))
            continue
        try:
            apply_overrides(graph, api.registry, {key: value})
        except OverrideError as exc:
            message = str(exc).splitlines()[-1].strip().removeprefix("- ")
            problems.append(_problem("bad_override", message, "fix or remove this override", node_id, node.type,
                                     name or None))
    return problems


def _invalid(api: Api, problems: list[dict[str, Any]]) -> Response:
    kept, omitted = bound_problems(api.redact.value(problems), api.limits)
    body: dict[str, Any] = {"error": "invalid_workflow", "message": f"{len(kept) + omitted} problem(s); nothing "
                            "was run", "problems": kept}
    if omitted:
        body["problems_omitted"] = omitted
    return Response(400, body)


def _queue_full(api: Api) -> Response:
    return Response(429, {"error": "queue_full", "message": f"{api.limits.max_queued} runs are already waiting; "
                          "retry when one has finished"}, headers={"Retry-After": "5"})


def _submit_run(api: Api, req: Request) -> Response:
    if api.runs.queued >= api.limits.max_queued:  # before any parsing: a full queue costs nothing
        return _queue_full(api)
    # Parsing and validating a large workflow takes memory and CPU: a few at a time, whatever
    # the number of connections.
    if not api.submit_slots.acquire(timeout=api.limits.request_seconds):
        return Response(503, {"error": "busy", "message": "the server is validating other workflows; retry "
                              "shortly"}, headers={"Retry-After": "5"})
    try:
        return _validate_and_queue(api, req)
    finally:
        api.submit_slots.release()


def _validate_and_queue(api: Api, req: Request) -> Response:
    try:
        workflow, overrides, targets = _parse_run_request(api, req)
        graph = from_dict(workflow)
    except BadRequest as exc:
        return error(exc.status, exc.code, str(exc))
    except WorkflowFileError as exc:
        text = clip(api.redact.text(str(exc)), api.limits.max_text)
        return _invalid(api, [_problem("invalid_file", text, "fix the workflow document")])
    except Exception as exc:  # the document is the client's: whatever it breaks is a bad request, not a 500
        log.warning("a submitted workflow broke the reader", exc_info=True)
        return _invalid(api, [_problem("invalid_file", f"the workflow document is malformed ({type(exc).__name__})",
                                       "fix the workflow document")])
    problems = _override_problems(api, graph, overrides)
    if not problems:
        try:
            api.executor.plan(graph, targets)
        except WorkflowInvalid as exc:
            problems = [i.to_dict() for i in exc.issues]
        except Exception as exc:  # likewise: a 400 naming the failure; the traceback goes to the log
            log.warning("validation failed on a submitted workflow", exc_info=True)
            problems = [_problem("invalid_file", f"the workflow could not be validated ({type(exc).__name__})",
                                 "fix the workflow document")]
    if problems:
        return _invalid(api, problems)
    try:
        record = api.runs.submit(graph, targets, api.redact.value(overrides, max_text=api.limits.max_text))
    except QueueFull:
        return _queue_full(api)
    return Response(202, {"id": record.id, "status": record.status, "url": f"/runs/{record.id}"},
                    headers={"Location": f"/runs/{record.id}"})


def _list_runs(api: Api, req: Request) -> Response:
    return Response(200, {"runs": [r.summary() for r in api.runs.list()]})


def _get_run(api: Api, req: Request) -> Response:
    record = api.runs.get(req.params["id"])
    if record is None:
        return error(404, "not_found", f"no run {clip(req.params['id'], 64)!r}")
    return Response(200, record.to_dict())


def _cancel_run(api: Api, req: Request) -> Response:
    record = api.runs.get(req.params["id"])
    if record is None:
        return error(404, "not_found", f"no run {clip(req.params['id'], 64)!r}")
    if record.status in ("done", "error"):
        return error(409, "finished", f"run {record.id!r} already finished ({record.status})")
    api.runs.cancel(record.id)
    return Response(200, record.summary())


def _get_output(api: Api, req: Request) -> Response:
    record = api.runs.get(req.params["id"])
    if record is None:
        return error(404, "not_found", f"no run {clip(req.params['id'], 64)!r}")
    outputs = record.files
    try:
        n = int(req.params["n"])
    except ValueError:
        return error(404, "not_found", "output index must be a number")
    if not 0 <= n < len(outputs):
        return error(404, "not_found", f"run {record.id!r} has {len(outputs)} output(s)")
    root = api.executor.output_dir.resolve()
    path = Path(outputs[n]).resolve()
    if root not in path.parents:  # never serve anything outside the output folder
        return error(403, "forbidden", "that output lies outside the output folder")
    try:
        data = path.read_bytes()
    except OSError:
        return error(410, "gone", "the output file no longer exists")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(200, data, ctype, {"Content-Disposition": content_disposition(path.name)})


def content_disposition(name: str) -> str:
    """``inline`` with an ASCII fallback name plus the exact one, percent-encoded (RFC 6266/8187):
    a header must be Latin-1, and a file called ``画像_00001.png`` must not break the reply."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _events(api: Api, req: Request) -> Response:
    if api.hub.subscribers >= api.limits.max_streams:  # each stream holds a connection thread
        return Response(503, {"error": "busy", "message": f"{api.limits.max_streams} event streams are open; "
                              "close one or retry later"}, headers={"Retry-After": "5"})
    return Response(200, None, "text/event-stream", {"Cache-Control": "no-cache"}, stream=api.event_stream)


# -- the table --------------------------------------------------------------------------------------

_E = ("error", "Error")
ROUTES: list[Route] = [
    Route("GET", "/", _index, "Service name, version and route list", {200: ("index", "Index")}),
    Route("GET", "/openapi.json", _openapi, "This API described as OpenAPI 3", {200: ("OpenAPI document", None)}),
    Route("GET", "/nodes", _list_nodes, "The node catalogue (every node type's inputs and outputs)",
          {200: ("catalogue", "NodeCatalogue")}),
    Route("POST", "/runs", _submit_run, "Validate a workflow (+ overrides) and queue it",
          {202: ("queued", "RunAccepted"), 400: ("invalid workflow, override or body", "Problems"),
           429: ("the queue is full; retry after Retry-After seconds", "Error"),
           503: ("busy: too many connections, or other workflows being validated", "Error")},
          request_schema="RunRequest"),
    Route("GET", "/runs", _list_runs, "Every known run, oldest first", {200: ("runs", "RunList")}),
    Route("GET", "/runs/{id}", _get_run, "One run: status and, once finished, its report",
          {200: ("run", "Run"), 404: _E}, params={"id": "string"}),
    Route("POST", "/runs/{id}/cancel", _cancel_run,
          "Cancel a queued run, or stop a running one at its next step",
          {200: ("cancel requested", "RunSummary"), 404: _E, 409: ("already finished", "Error")},
          params={"id": "string"}),
    Route("GET", "/runs/{id}/outputs/{n}", _get_output, "Download the n-th file a run wrote",
          {200: ("the file", None), 403: _E, 404: _E, 410: ("file deleted", "Error")},
          params={"id": "string", "n": "integer"}, content_type="application/octet-stream"),
    Route("GET", "/events", _events, "Server-Sent Events: every engine event as JSON (event.to_dict() + run id)",
          {200: ("event stream", None), 503: ("too many event streams open", "Error")},
          content_type="text/event-stream"),
]
