"""``nodegraph serve``: a REAL server on 127.0.0.1 (ephemeral port) driven over HTTP with bounded
loops and timeouts: submit, status, cancel, outputs (confined), SSE events, structured validation
errors, and an OpenAPI document generated from the route table and checked by openapi-spec-validator."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nodegraph import Executor, Graph
from nodegraph.server import ROUTES, NodegraphServer
from nodegraph.workflow import to_dict
from tests.headless.helpers import server_registry, text_graph, wait_until

TIMEOUT = 10.0


@pytest.fixture()
def server(tmp_path):
    executor = Executor(server_registry(), output_dir=tmp_path / "out")
    srv = NodegraphServer("127.0.0.1", 0, executor=executor).start()
    yield srv
    srv.close()


def call(srv: NodegraphServer, method: str, path: str, body: object | None = None) -> tuple[int, object, dict]:
    data = json.dumps(body).encode() if body is not None else None
    # State-changing requests must say they carry JSON (even an empty body): the CSRF gate.
    req = urllib.request.Request(srv.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if method != "GET" else {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    ctype = headers.get("Content-Type", "")
    return status, json.loads(raw) if ctype.startswith("application/json") else raw, headers


def finished(srv: NodegraphServer, run_id: str) -> dict:
    def done():
        _, run, _ = call(srv, "GET", f"/runs/{run_id}")
        return run if run["status"] in ("done", "error", "cancelled") else None
    return wait_until(done, TIMEOUT)


def slow_graph(steps: int, tag: str = "") -> dict:
    g = Graph()
    g.add_node("headless.slow", {"steps": steps, "tag": tag}, id="slow")
    return to_dict(g)


def test_binds_loopback_and_runs_a_workflow_with_overrides(server):
    assert server.address[0] == "127.0.0.1"
    status, body, headers = call(server, "POST", "/runs", {"workflow": to_dict(text_graph()),
                                                          "overrides": {"div.b": 4, "cat.b": "api"}})
    assert status == 202 and body["status"] == "queued" and headers["Location"] == f"/runs/{body['id']}"
    run = finished(server, body["id"])
    assert run["status"] == "done" and run["overrides"] == {"div.b": 4, "cat.b": "api"}
    assert run["report"]["nodes"]["save"]["status"] == "executed"
    assert run["outputs"] == [f"/runs/{body['id']}/outputs/0"]
    status, data, headers = call(server, "GET", run["outputs"][0])
    assert status == 200 and data == b"3:api" and headers["Content-Type"] == "text/plain"
    assert call(server, "GET", f"/runs/{body['id']}/outputs/1")[0] == 404
    _, listing, _ = call(server, "GET", "/runs")
    assert [r["id"] for r in listing["runs"]] == [body["id"]]
    assert call(server, "GET", "/runs/nope")[0] == 404
    assert call(server, "DELETE", "/runs")[0] == 405
    assert call(server, "GET", "/no/such/route")[0] == 404


def test_invalid_workflows_answer_400_naming_node_and_input(server):
    g = text_graph()
    g.set_value("div", "op", "teleport")
    g.set_value("num", "value", "twelve")
    status, body, _ = call(server, "POST", "/runs", {"workflow": to_dict(g)})
    assert status == 400 and body["error"] == "invalid_workflow"
    found = {(p["node_id"], p["input"], p["kind"]) for p in body["problems"]}
    assert found == {("div", "op", "not_in_choices"), ("num", "value", "bad_value")}
    assert all(set(p) == {"kind", "node_id", "node_type", "input", "path", "message", "fix"} for p in body["problems"])
    status, body, _ = call(server, "POST", "/runs", {"workflow": to_dict(text_graph()),
                                                     "overrides": {"div.b": "abc", "ghost.value": 1}})
    assert status == 400
    assert {(p["node_id"], p["input"]) for p in body["problems"]} == {("div", "b"), ("ghost", "value")}
    assert "abc" in body["problems"][0]["message"]
    assert call(server, "POST", "/runs", {"workflow": {"version": 99}})[1]["error"] == "invalid_workflow"
    assert call(server, "POST", "/runs", {"nope": 1})[0] == 400
    assert call(server, "GET", "/runs")[1]["runs"] == []  # nothing was queued


def test_cancel_queued_and_running_runs(server):
    _, a, _ = call(server, "POST", "/runs", {"workflow": slow_graph(500, "a")})  # ~10 s if not cancelled
    _, b, _ = call(server, "POST", "/runs", {"workflow": slow_graph(5, "b")})
    wait_until(lambda: call(server, "GET", f"/runs/{a['id']}")[1]["status"] == "running", TIMEOUT)
    status, body, _ = call(server, "POST", f"/runs/{b['id']}/cancel")
    assert status == 200 and body["status"] == "cancelled"  # a queued run is cancelled at once
    status, _, _ = call(server, "POST", f"/runs/{a['id']}/cancel")
    assert status == 200
    run = finished(server, a["id"])
    assert run["status"] == "cancelled" and run["report"]["status"] == "cancelled"
    assert call(server, "GET", f"/runs/{b['id']}")[1]["report"] is None  # never started
    _, c, _ = call(server, "POST", "/runs", {"workflow": slow_graph(1)})
    assert finished(server, c["id"])["status"] == "done"
    assert call(server, "POST", f"/runs/{c['id']}/cancel")[0] == 409


def test_outputs_outside_the_output_folder_are_never_served(server, tmp_path):
    _, body, _ = call(server, "POST", "/runs", {"workflow": to_dict(text_graph())})
    finished(server, body["id"])
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    record = server.api.runs.get(body["id"])
    link = server.executor.output_dir / "link.txt"
    os.symlink(secret, link)  # inside by name, outside once resolved
    record.files[:] = [str(link), str(secret), str(server.executor.output_dir / ".." / "secret.txt")]
    for n in range(3):
        status, err, _ = call(server, "GET", f"/runs/{body['id']}/outputs/{n}")
        assert status == 403 and err["error"] == "forbidden"


def test_events_stream_engine_events_as_json(server):
    conn = http.client.HTTPConnection(*server.address, timeout=TIMEOUT)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events: queue.Queue = queue.Queue()

    def reader():
        data = None
        for _ in range(2000):  # bounded
            line = resp.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                events.put(data)
                data = None

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_until(lambda: server.api.hub.subscribers == 1, TIMEOUT)
    _, body, _ = call(server, "POST", "/runs", {"workflow": slow_graph(3)})
    got = []
    while not any(e.get("kind") == "run_status" and e.get("status") == "done" for e in got):
        got.append(events.get(timeout=TIMEOUT))
    conn.close()
    mine = [e for e in got if e.get("run") == body["id"]]
    kinds = [e["kind"] for e in mine]
    assert kinds[0] == "run_queued" and kinds[-1] == "run_status"
    for kind in ("run_started", "node_started", "node_progress", "node_finished", "run_finished"):
        assert kind in kinds
    progress = [e for e in mine if e["kind"] == "node_progress"]
    assert [(p["node_id"], p["step"], p["total"]) for p in progress] == [("slow", i, 3) for i in (1, 2, 3)]
    assert all("preview" not in e for e in mine)
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)


def test_openapi_document_is_valid_and_matches_the_route_table(server):
    validate = pytest.importorskip("openapi_spec_validator", reason="test extra: openapi-spec-validator").validate

    status, doc, _ = call(server, "GET", "/openapi.json")
    assert status == 200
    validate(doc)  # raises on an invalid OpenAPI 3 document
    served = {(r.method.lower(), r.path) for r in ROUTES}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served
    assert doc["paths"]["/runs"]["post"]["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problems"}
    assert call(server, "GET", "/nodes")[1]["nodes"][0]["type"]
    index = call(server, "GET", "/")[1]
    assert set(index["routes"]) == {f"{m.upper()} {p}" for m, p in served}


def test_cli_serve_binds_loopback_by_default(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "nodegraph.cli", "serve", "--port", "0", "-o", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
        url = None
        while url is None:
            line = lines.get(timeout=60)
            m = re.search(r"serving (http://[\d.]+:\d+)", line)
            url = m.group(1) if m else None
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/openapi.json", timeout=TIMEOUT) as resp:
            assert json.loads(resp.read())["openapi"].startswith("3.")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_overrides_reach_nodes_inside_a_subgraph_instance(server):
    """``outer/inner.input`` works in POST /runs as on the command line; only an unknown top-level
    node is refused up front."""
    from nodegraph.subgraph import extract

    g = text_graph()
    extract(g, server.executor.registry, ["div", "txt"], "halve", instance_id="h")
    status, body, _ = call(server, "POST", "/runs", {"workflow": to_dict(g), "overrides": {"h/div.b": 4}})
    assert status == 202, body
    run = finished(server, body["id"])
    assert run["status"] == "done"
    assert call(server, "GET", run["outputs"][0])[1] == b"3:x"  # 12 // 4, computed inside the subgraph
    status, body, _ = call(server, "POST", "/runs", {"workflow": to_dict(g),
                                                     "overrides": {"h/ghost.b": 1, "nowhere/div.b": 1}})
    assert status == 400
    assert {p["node_id"] for p in body["problems"]} == {"h/ghost", "nowhere/div"}
