"""OpenAPI 3 document generated from the route table (so it cannot drift from the code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ISSUE = {
    "type": "object",
    "required": ["kind", "message", "fix"],
    "properties": {
        "kind": {"type": "string", "description": "e.g. missing_input, bad_value, not_in_choices, bad_override, "
                                                  "path_not_allowed (a file name outside the server's folders)"},
        "node_id": {"type": "string", "nullable": True},
        "node_type": {"type": "string", "nullable": True},
        "input": {"type": "string", "nullable": True},
        "path": {"type": "string", "nullable": True,
                 "description": "node_id.input; inside subgraphs node ids are paths (outer/inner)"},
        "message": {"type": "string"},
        "fix": {"type": "string", "description": "what to do about it"},
    },
}
_SUMMARY_PROPS = {
    "id": {"type": "string"},
    "status": {"type": "string", "enum": ["queued", "running", "done", "error", "cancelled"]},
    "created": {"type": "number"},
    "started": {"type": "number", "nullable": True},
    "finished": {"type": "number", "nullable": True},
    "outputs": {"type": "array", "items": {"type": "string"}, "description": "URLs of the files written"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
    "ValidationIssue": _ISSUE,
    "Problems": {"type": "object", "required": ["error", "problems"],
                 "properties": {"error": {"type": "string", "enum": ["invalid_workflow", "bad_request"]},
                                "message": {"type": "string"},
                                "problems": {"type": "array", "maxItems": 50,
                                             "items": {"$ref": "#/components/schemas/ValidationIssue"},
                                             "description": "deduplicated; texts clipped to 500 characters"},
                                "problems_omitted": {"type": "integer",
                                                     "description": "distinct problems left out of the list"}}},
    "RunRequest": {
        "type": "object", "required": ["workflow"],
        "properties": {
            "workflow": {"type": "object", "description": "a workflow document (nodegraph.workflow format)"},
            "overrides": {"type": "object", "additionalProperties": True, "maxProperties": 256,
                          "description": 'input values to set, keyed "node_id.input"'},
            "outputs": {"type": "array", "items": {"type": "string"}, "maxItems": 64,
                        "description": "output node ids to run (default: all)"},
        },
    },
    "RunAccepted": {"type": "object", "required": ["id", "status"],
                    "properties": {"id": {"type": "string"}, "status": {"type": "string"}, "url": {"type": "string"}}},
    "RunSummary": {"type": "object", "required": ["id", "status"], "properties": _SUMMARY_PROPS},
    "Run": {"type": "object", "required": ["id", "status"],
            "properties": {**_SUMMARY_PROPS,
                           "overrides": {"type": "object", "additionalProperties": True},
                           "message": {"type": "string", "nullable": True},
                           "report": {"type": "object", "nullable": True,
                                      "description": "compact run report: status, seconds, nodes (per-node "
                                                     "type/status/seconds, at most 500), outputs (file names "
                                                     "relative to the output folder), error (node_id, node_type, "
                                                     "input, message; never a traceback), stats (figures nodes "
                                                     "published, e.g. memory: budget, resident, offloaded, peak "
                                                     "bytes and a line)"}}},
    "RunList": {"type": "object", "properties": {"runs": {"type": "array",
                                                          "items": {"$ref": "#/components/schemas/RunSummary"}}}},
    "NodeCatalogue": {"type": "object", "properties": {"nodes": {"type": "array", "items": {"type": "object"}}}},
    "Index": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                               "openapi": {"type": "string"},
                                               "routes": {"type": "array", "items": {"type": "string"}}}},
}


def openapi_document(routes: Sequence[Any]) -> dict[str, Any]:
    from .. import __version__

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"operationId": r.operation_id, "summary": r.summary, "responses": {}}
        if r.params:
            op["parameters"] = [{"name": name, "in": "path", "required": True, "schema": {"type": kind}}
                                for name, kind in r.params.items()]
        if r.request_schema:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.request_schema}"}}}}
        for status, (description, schema) in sorted(r.responses.items()):
            resp: dict[str, Any] = {"description": description}
            if schema is not None:
                resp["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
            elif status < 300:
                ctype = "application/json" if r.content_type == "application/json" else r.content_type
                resp["content"] = {ctype: {"schema": {"type": "string"} if ctype != "application/json"
                                           else {"type": "object"}}}
            op["responses"][str(status)] = resp
        for status_text, resp in _gate_responses(r.method).items():
            op["responses"].setdefault(status_text, resp)
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "nodegraph", "version": __version__,
                 "description": "Queue and run nodegraph workflows headless; stream engine events; fetch outputs. "
                                "Bound to 127.0.0.1 unless asked otherwise. Every request needs a Host naming "
                                "this server and no cross-site Origin/Sec-Fetch-Site; POST/PUT/PATCH/DELETE "
                                "need 'Content-Type: application/json'. A server started with --token (always "
                                "when bound beyond loopback) needs 'Authorization: Bearer <token>'."},
        "paths": paths,
        "security": [{}, {"bearer": []}],  # optional: depends on how the server was started
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _gate_responses(method: str) -> dict[str, Any]:
    """What the gate in front of every route may answer (see :mod:`nodegraph.server.security`)."""
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    out = {"401": {"description": "a token is required and was missing or wrong", **err},
           "403": {"description": "foreign Host, or a cross-site Origin / Sec-Fetch-Site", **err}}
    out["400"] = {"description": "malformed request (e.g. Content-Length not a number)", **err}
    out["503"] = {"description": "too many open connections; retry after Retry-After seconds", **err}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        out["411"] = {"description": "chunked body: send a Content-Length", **err}
        out["413"] = {"description": "body over 8 MiB", **err}
        out["415"] = {"description": "the request is not 'Content-Type: application/json'", **err}
    return out
