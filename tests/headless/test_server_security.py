"""``nodegraph serve`` against an attacker, on 127.0.0.1 only, with bounded loops and timeouts.

The browser-facing gate (Host / Origin / Sec-Fetch-Site / Content-Type / bearer token), path
confinement of server runs, responses without tracebacks or install paths, and the resource
bounds (body, overrides, outputs, errors, records, queue, sockets, malformed requests)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nodegraph import Executor, Graph, NodeResult, String, node
from nodegraph.server import NodegraphServer
from nodegraph.server.security import Access, resolve_token
from nodegraph.workflow import to_dict
from nodes import image
from tests.headless.helpers import server_registry, text_graph, wait_until

TIMEOUT = 10.0
JSON = {"Content-Type": "application/json"}


@pytest.fixture()
def server(tmp_path):
    executor = Executor(server_registry(), output_dir=tmp_path / "out")
    srv = NodegraphServer("127.0.0.1", 0, executor=executor).start()
    yield srv
    srv.close()


def raw(srv: NodegraphServer, method: str, path: str, body: bytes | str | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict | bytes, dict[str, str]]:
    """One request on a fresh connection; ``headers`` may replace Host (http.client then sends ours)."""
    conn = http.client.HTTPConnection(*srv.address, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    if hdrs.get("content-type", "").startswith("application/json"):
        return resp.status, json.loads(data), hdrs
    return resp.status, data, hdrs


def workflow_body(**extra: object) -> str:
    return json.dumps({"workflow": to_dict(text_graph()), **extra})


def queued(srv: NodegraphServer) -> int:
    return len(srv.api.runs.list())


# -- the browser-facing gate --------------------------------------------------------------------------


def test_foreign_host_is_refused_dns_rebinding(server):
    port = server.address[1]
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1.evil.example",
                 f"localhost:{port}@evil", "", "[::1"):
        status, body, _ = raw(server, "GET", "/runs", headers={"Host": host})
        assert status == 403 and body["error"] == "forbidden_host", host
        status, body, _ = raw(server, "POST", "/runs", workflow_body(), headers={"Host": host, **JSON})
        assert status == 403, host
    assert queued(server) == 0
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "127.0.0.1"):
        assert raw(server, "GET", "/runs", headers={"Host": host})[0] == 200, host


def test_http10_request_without_host_is_refused(server):
    with socket.create_connection(server.address, timeout=TIMEOUT) as s:
        s.sendall(b"GET /runs HTTP/1.0\r\n\r\n")
        reply = _recv_all(s)
    assert reply.startswith(b"HTTP/1.0 403") and b'"forbidden_host"' in reply


def test_simple_cross_site_posts_never_queue_a_run(server):
    port = server.address[1]
    attempts = [
        {"Content-Type": "text/plain"},  # a "simple" request: no preflight
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},
        {**JSON, "Origin": "null"},  # sandboxed iframe, file: page
        {**JSON, "Origin": "http://evil.example"},
        {**JSON, "Origin": f"http://localhost:{port + 1}"},  # another local app
        {**JSON, "Origin": f"https://127.0.0.1:{port}"},
        {**JSON, "Sec-Fetch-Site": "cross-site"},
        {**JSON, "Sec-Fetch-Site": "same-site"},  # e.g. a page on another port of localhost
    ]
    for headers in attempts:
        status, body, hdrs = raw(server, "POST", "/runs", workflow_body(), headers=headers)
        assert status in (403, 415), headers
        assert body["error"] in ("cross_origin", "unsupported_media_type")
        assert "access-control-allow-origin" not in hdrs
    assert queued(server) == 0
    # The same request from the server's own origin, or from a non-browser client, is fine.
    for headers in ({**JSON, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
                    {"Content-Type": "application/json; charset=utf-8"}):
        assert raw(server, "POST", "/runs", workflow_body(), headers=headers)[0] == 202
    assert queued(server) == 2


def test_every_state_changing_route_needs_json(server):
    status, body, _ = raw(server, "POST", "/runs", workflow_body(), headers=JSON)
    run_id = body["id"]
    status, body, _ = raw(server, "POST", f"/runs/{run_id}/cancel", headers={"Content-Type": "text/plain"})
    assert status == 415
    for method in ("PUT", "PATCH", "DELETE"):
        assert raw(server, method, "/runs", headers={"Content-Type": "text/plain"})[0] == 415
        status, body, _ = raw(server, method, "/runs", headers=JSON)
        assert status == 405 and body["error"] == "method_not_allowed"  # JSON, not stdlib's HTML 501


def test_bearer_token_is_required_when_configured(tmp_path):
    executor = Executor(server_registry(), output_dir=tmp_path / "out")
    with NodegraphServer("127.0.0.1", 0, executor=executor, token="s3cret-token") as srv:
        for auth in (None, "Bearer wrong", "Bearer s3cret-tokenX", "Basic s3cret-token", "s3cret-token",
                     "Bearer ", "Bearer s3cret-tokén"):
            headers = {"Authorization": auth} if auth is not None else {}
            for path in ("/runs", "/events", "/openapi.json", "/"):
                status, body, hdrs = raw(srv, "GET", path, headers=headers)
                assert status == 401 and body["error"] == "unauthorized", (auth, path)
                assert hdrs["www-authenticate"].startswith("Bearer")
            assert raw(srv, "POST", "/runs", workflow_body(), headers={**headers, **JSON})[0] == 401
        assert queued(srv) == 0
        good = {"Authorization": "Bearer s3cret-token"}
        assert raw(srv, "GET", "/runs", headers=good)[0] == 200
        assert raw(srv, "POST", "/runs", workflow_body(), headers={**good, **JSON})[0] == 202


def test_binding_beyond_loopback_generates_a_user_only_token(tmp_path):
    # Resolved without binding anything: the tests only ever listen on 127.0.0.1.
    assert resolve_token(None, "127.0.0.1", tmp_path / "t") == (None, None)
    assert resolve_token(None, "::1", tmp_path / "t") == (None, None)
    token, path = resolve_token(None, "0.0.0.0", tmp_path / "cfg" / "token")
    assert path == tmp_path / "cfg" / "token" and len(token) >= 32
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, _ = resolve_token("auto", "127.0.0.1", path)
    assert again != token and path.read_text().strip() == again  # a fresh one each start
    assert resolve_token("given", "192.168.1.5", path) == ("given", None)
    # Bound to a wildcard: IP literals are ours (rebinding needs a DNS name), names are not.
    gate = Access("0.0.0.0", 8188, token)
    assert gate.host_allowed("192.168.1.5:8188") and gate.host_allowed("localhost")
    assert not gate.host_allowed("evil.example:8188")
    assert Access("0.0.0.0", 8188, extra_hosts=frozenset({"Studio.lan"})).host_allowed("studio.lan:8188")


def test_cli_token_auto_prints_the_file_and_enforces_it(tmp_path):
    token_file = tmp_path / "conf" / "server-token"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "nodegraph.cli", "serve", "--port", "0", "-o", str(tmp_path),
                             "--token", "auto", "--token-file", str(token_file)],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
        url, told = None, ""
        while url is None:
            line = lines.get(timeout=60)
            told += line
            m = re.search(r"serving http://127\.0\.0\.1:(\d+)", line)
            url = m and int(m.group(1))
        assert str(token_file) in told
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        conn = http.client.HTTPConnection("127.0.0.1", url, timeout=TIMEOUT)
        conn.request("GET", "/runs")
        assert conn.getresponse().status == 401
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", url, timeout=TIMEOUT)
        conn.request("GET", "/runs", headers={"Authorization": f"Bearer {token}"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _recv_all(s: socket.socket, limit: int = 1 << 20) -> bytes:
    chunks, total = [], 0
    while total < limit:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)



# -- path confinement and what responses may say -------------------------------------------------------


def _png(path: Path, value: int) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, 0, 0)).save(path)
    return path


@node("headless.boom", category="test", inputs=[String("where", "")], outputs=[], output_node=True)
def boom(ctx: object, where: str) -> NodeResult:
    """Fails the way real nodes do: an exception whose text names an absolute path."""
    raise RuntimeError(f"cannot open {where}: permission denied")


@pytest.fixture()
def files_server(tmp_path):
    reg = server_registry()
    reg.load_pack(image.register)
    reg.add_pack("headless_boom", [boom])
    executor = Executor(reg, output_dir=tmp_path / "out")
    srv = NodegraphServer("127.0.0.1", 0, executor=executor, input_dir=tmp_path / "in").start()
    yield srv
    srv.close()


def load_and_save(path: str, prefix: str = "copy") -> dict:
    g = Graph()
    g.add_node("image.load_path", {"path": path}, id="load")
    g.add_node("image.save", {"filename_prefix": prefix, "embed_workflow": False}, id="save")
    g.connect("load", "IMAGE", "save", "images")
    return to_dict(g)


def submit(srv: NodegraphServer, workflow: dict, **extra: object) -> tuple[int, dict]:
    status, body, _ = raw(srv, "POST", "/runs", json.dumps({"workflow": workflow, **extra}), headers=JSON)
    return status, body


def finished(srv: NodegraphServer, run_id: str) -> dict:
    def done():
        run = raw(srv, "GET", f"/runs/{run_id}")[1]
        return run if run["status"] in ("done", "error", "cancelled") else None
    return wait_until(done, TIMEOUT)


def test_server_runs_read_only_from_the_input_folder_and_never_reveal_other_files(files_server, tmp_path):
    _png(tmp_path / "in" / "ok.png", 10)
    secret = _png(tmp_path / "private" / "secret.png", 200)  # exists, outside the input folder
    os.symlink(secret, tmp_path / "in" / "link.png")  # inside by name, outside once resolved
    answers = set()
    for path in (str(secret), str(tmp_path / "private" / "missing.png"), "/etc/passwd", "/no/such/file.png",
                 "../private/secret.png", "../private/missing.png", "sub/../../private/secret.png",
                 str(tmp_path / "in" / ".." / "private" / "secret.png"), "link.png", "C:\\Windows\\win.ini",
                 "..\\private\\secret.png"):
        status, body = submit(files_server, load_and_save(path))
        assert status == 400, path
        (problem,) = body["problems"]
        assert (problem["node_id"], problem["input"], problem["kind"]) == ("load", "path", "path_not_allowed")
        answers.add(json.dumps(body, sort_keys=True))
    assert len(answers) == 1  # the same answer whether the file exists or not
    assert str(tmp_path) not in answers.pop()
    assert queued(files_server) == 0
    # Inside the folder: a name, or an absolute path there, runs (and the result is served).
    for path in ("ok.png", str(tmp_path / "in" / "ok.png")):
        status, body = submit(files_server, load_and_save(path))
        assert status == 202, body
        run = finished(files_server, body["id"])
        assert run["status"] == "done" and len(run["outputs"]) == 1
        assert raw(files_server, "GET", run["outputs"][0])[0] == 200
    # A missing file inside the input folder is reported -- without the server's absolute path.
    status, body = submit(files_server, load_and_save("nope.png"))
    assert status == 400 and body["problems"][0]["input"] == "path"
    assert str(tmp_path) not in json.dumps(body) and "<input>" in json.dumps(body)


def test_server_runs_write_only_inside_the_output_folder(files_server, tmp_path):
    _png(tmp_path / "in" / "ok.png", 10)
    (tmp_path / "out").mkdir(exist_ok=True)
    os.symlink(tmp_path / "private", tmp_path / "out" / "escape", target_is_directory=True)
    for prefix in (str(tmp_path / "stolen"), "../stolen", "a/../../stolen", "escape/stolen", "C:/stolen",
                   "x\u202egnp.exe", "."):
        status, body = submit(files_server, load_and_save("ok.png", prefix))
        assert status == 400, prefix
        assert [(p["node_id"], p["input"]) for p in body["problems"]] == [("save", "filename_prefix")], prefix
    # A computed (linked) file name cannot be checked before the run: refused on the server.
    g = text_graph()
    g.add_node("primitives.string", {"value": "../stolen"}, id="name")
    g.connect("name", "STRING", "save", "filename_prefix")
    status, body = submit(files_server, to_dict(g))
    assert status == 400 and body["problems"][0]["kind"] == "path_not_allowed"
    assert not (tmp_path / "stolen_00001.png").exists() and not list((tmp_path / "private").glob("*"))
    assert queued(files_server) == 0
    status, body = submit(files_server, load_and_save("ok.png", "sub/dir/img"))
    assert status == 202 and finished(files_server, body["id"])["status"] == "done"
    assert (tmp_path / "out" / "sub" / "dir" / "img_00001.png").is_file()


def test_no_traceback_or_absolute_path_in_any_response(files_server, tmp_path):
    install = str(Path(__file__).resolve().parents[2])
    conn = http.client.HTTPConnection(*files_server.address, timeout=TIMEOUT)
    conn.request("GET", "/events")
    stream = conn.getresponse()
    wait_until(lambda: files_server.api.hub.subscribers == 1, TIMEOUT)
    g = Graph()
    g.add_node("headless.boom", {"where": str(tmp_path / "in" / "x.png")}, id="boom")
    status, body = submit(files_server, to_dict(g))
    assert status == 202
    run = finished(files_server, body["id"])
    assert run["status"] == "error" and run["report"]["error"]["node_id"] == "boom"
    assert "<input>/x.png" in run["message"]
    events = b""
    while b'"status": "error"' not in events:  # bounded by the connection timeout
        events += stream.fp.readline()
    conn.close()
    replies = [json.dumps(run), json.dumps(raw(files_server, "GET", "/runs")[1]), events.decode(),
               json.dumps(raw(files_server, "GET", "/nodes")[1])]
    for text in replies:
        assert "Traceback" not in text and '"traceback"' not in text
        assert str(tmp_path) not in text and install not in text
    # An internal bug answers a one-line JSON error, not the exception's text.
    files_server.api.registry.catalogue = lambda settings=None: 1 / 0
    status, body, hdrs = raw(files_server, "GET", "/nodes")
    assert status == 500 and body == {"error": "internal_error",
                                      "message": "internal error (details are in the server's log)"}


# -- resource bounds -----------------------------------------------------------------------------------


def small_server(tmp_path: Path, **limits: object) -> NodegraphServer:
    from nodegraph.server.limits import Limits

    executor = Executor(server_registry(), output_dir=tmp_path / "out")
    return NodegraphServer("127.0.0.1", 0, executor=executor, limits=Limits(**limits))  # started by `with`


def one_line_json_error(status: int, body: object) -> None:
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and isinstance(body["error"], str) and "\n" not in body["message"]
    assert "Traceback" not in json.dumps(body)


def test_overrides_are_capped_and_validated_without_copying_the_graph(server, monkeypatch):
    from nodegraph.graph import Graph as GraphClass

    copies = []
    original = GraphClass.copy
    monkeypatch.setattr(GraphClass, "copy", lambda self: copies.append(1) or original(self))
    many = {f"div.x{i}": i for i in range(4000)}  # the 0.29 MB body that took 49 s
    status, body, _ = raw(server, "POST", "/runs", workflow_body(overrides=many), headers=JSON)
    one_line_json_error(status, body)
    assert status == 400 and "at most 256" in body["message"]
    bad = {f"ghost{i}.value": i for i in range(128)} | {"div.b": "abc", "cat.nope": 1}
    status, body, _ = raw(server, "POST", "/runs", workflow_body(overrides=bad), headers=JSON)
    assert status == 400 and len(body["problems"]) == 50 and body["problems_omitted"] == 80
    assert copies == []  # validating overrides copies nothing
    ok = {"div.b": 4, "cat.b": "y"}
    status, body, _ = raw(server, "POST", "/runs", workflow_body(overrides=ok), headers=JSON)
    assert status == 202 and finished(server, body["id"])["overrides"] == {"div.b": 4, "cat.b": "y"}
    assert len(copies) == 1  # the executor's own snapshot for the run


def test_a_huge_outputs_list_gets_a_small_reply(server):
    ids = [f"missing-node-{i:07d}" for i in range(200_000)]  # ~4.4 MB of distinct ids
    data = workflow_body(outputs=ids)
    assert len(data) > 4_000_000
    status, body, _ = raw(server, "POST", "/runs", data, headers=JSON)
    one_line_json_error(status, body)
    assert len(json.dumps(body)) < 1000
    # One id repeated is one request; a few unknown ids are each reported once, briefly.
    status, body, _ = raw(server, "POST", "/runs", workflow_body(outputs=["nope"] * 200_000 + ids[:60]),
                          headers=JSON)
    assert status == 400 and len(body["problems"]) == 50 and body["problems_omitted"] == 11
    assert len(json.dumps(body)) < 50 * 1100
    assert queued(server) == 0


def test_problem_texts_are_clipped(server):
    g = text_graph()
    g.set_value("div", "b", "9" * 1_000_000)  # echoed in the message
    g.set_value("num", "value", "x" * 1_000_000)
    status, body, _ = raw(server, "POST", "/runs", json.dumps({"workflow": to_dict(g)}), headers=JSON)
    assert status == 400 and {p["node_id"] for p in body["problems"]} == {"div", "num"}
    assert len(json.dumps(body)) < 4000


def test_finished_records_are_small_and_their_number_capped(tmp_path):
    with small_server(tmp_path, max_kept=3) as srv:
        ids = []
        for i in range(6):
            status, body, _ = raw(srv, "POST", "/runs", workflow_body(overrides={"cat.b": f"r{i}"}), headers=JSON)
            assert status == 202
            ids.append(body["id"])
            assert finished(srv, body["id"])["status"] == "done"
        listing = raw(srv, "GET", "/runs")[1]["runs"]
        assert [r["id"] for r in listing] == ids[-3:]
        assert raw(srv, "GET", f"/runs/{ids[0]}")[0] == 404
        record = srv.api.runs.get(ids[-1])
        assert record.graph is None  # the workflow is gone once the run finished
        assert set(record.report) <= {"status", "seconds", "nodes", "outputs", "error", "nodes_omitted"}
        assert record.report["outputs"] == ["result_00006.txt"]  # relative to the output folder
        assert len(json.dumps(record.to_dict())) < 2000


def test_the_queue_is_capped_with_429(tmp_path):
    from tests.headless.test_server import slow_graph

    with small_server(tmp_path, max_queued=2) as srv:
        first = raw(srv, "POST", "/runs", json.dumps({"workflow": slow_graph(500)}), headers=JSON)[1]
        wait_until(lambda: srv.api.runs.get(first["id"]).status == "running", TIMEOUT)
        for _ in range(2):
            assert raw(srv, "POST", "/runs", json.dumps({"workflow": slow_graph(1)}), headers=JSON)[0] == 202
        status, body, hdrs = raw(srv, "POST", "/runs", json.dumps({"workflow": slow_graph(1)}), headers=JSON)
        assert status == 429 and body["error"] == "queue_full" and int(hdrs["retry-after"]) > 0
        assert srv.api.runs.queued == 2
        raw(srv, "POST", f"/runs/{first['id']}/cancel", headers=JSON)
        wait_until(lambda: srv.api.runs.queued == 0, TIMEOUT)
        assert raw(srv, "POST", "/runs", json.dumps({"workflow": slow_graph(1)}), headers=JSON)[0] == 202


def test_slowloris_connections_are_bounded_and_cut(tmp_path):
    with small_server(tmp_path, max_connections=6, request_seconds=1.0, read_timeout=0.5) as srv:
        before = threading.active_count()
        socks = []
        try:
            for _ in range(40):
                s = socket.create_connection(srv.address, timeout=TIMEOUT)
                s.sendall(b"GET /runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                socks.append(s)
            peak = 0
            closed: set[int] = set()
            for _ in range(60):  # bounded: ~6 s; a header byte every 0.1 s beats any per-read timeout
                for i, s in enumerate(socks):
                    if i not in closed:
                        try:
                            s.sendall(b"X")
                        except OSError:
                            closed.add(i)
                peak = max(peak, threading.active_count() - before)
                if len(closed) == len(socks):
                    break
                threading.Event().wait(0.1)
            assert len(closed) == len(socks)  # the server hung up on every one of them
            assert peak <= 6 + 1  # the connection threads, plus at most one finishing
            for s in socks:  # every slow connection ended: refused at once (503) or cut by the deadline
                s.settimeout(TIMEOUT)
                data = _recv_all(s)
                assert data == b"" or data.startswith(b"HTTP/1.1 503")  # (the refusal is ours, 1.1)
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: srv.httpd.open_requests == 0, TIMEOUT)
        assert raw(srv, "GET", "/runs")[0] == 200  # and the server still serves


def test_malformed_content_length_and_framing_get_4xx(server):
    cases = {b"abc": 400, b"-5": 400, b"1e3": 400, b" ": 400, b"99999999999999": 413, b"0x10": 400}
    for value, expected in cases.items():
        with socket.create_connection(server.address, timeout=TIMEOUT) as s:
            s.sendall(b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + value + b"\r\n\r\n{}")
            reply = _recv_all(s)
        assert reply.startswith(b"HTTP/1.0 %d" % expected) or reply.startswith(b"HTTP/1.1 %d" % expected), value
        assert reply.rstrip().endswith(b"}") and reply.count(b'"error"') == 1
    with socket.create_connection(server.address, timeout=TIMEOUT) as s:
        s.sendall(b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
        assert b" 400 " in _recv_all(s).split(b"\r\n")[0]
    with socket.create_connection(server.address, timeout=TIMEOUT) as s:
        s.sendall(b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        assert b" 411 " in _recv_all(s).split(b"\r\n")[0]
    with socket.create_connection(server.address, timeout=TIMEOUT) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        reply = _recv_all(s)
        assert b'"error"' in reply and b"<html" not in reply.lower()
    assert queued(server) == 0


def test_hostile_json_bodies_get_a_one_line_4xx(server):
    wf = to_dict(text_graph())
    deep = "[" * 100_000 + "]" * 100_000
    bodies = [
        '{"workflow": ' + deep + "}",
        '{"workflow": {"version": 1, "meta": ' + "[" * 200 + "]" * 200 + "}}",
        '{"workflow": {"version": ' + "9" * 4301 + "}}",
        json.dumps({"workflow": {**wf, "links": None}}),
        json.dumps({"workflow": {**wf, "links": [None, 3, {"from": None}]}}),
        json.dumps({"workflow": {**wf, "nodes": []}}),
        json.dumps({"workflow": {**wf, "nodes": {"": {"type": ""}}}}),
        json.dumps({"workflow": {**wf, "version": True}}),
        json.dumps({"workflow": wf, "overrides": []}),
        json.dumps({"workflow": wf, "outputs": "save"}),
        json.dumps({"workflow": wf, "outputs": [1]}),
        json.dumps([wf]),
        "not json",
        b"\xff\xfe{}",
        "",
    ]
    for data in bodies:
        status, body, _ = raw(server, "POST", "/runs", data, headers=JSON)
        one_line_json_error(status, body)
        assert status == 400, (data[:80], body)
    assert queued(server) == 0


def test_non_latin1_file_and_output_names_do_not_drop_the_connection(server):
    status, body, _ = raw(server, "POST", "/runs", workflow_body(outputs=["画像"]), headers=JSON)
    assert status == 400 and body["problems"][0]["kind"] == "unknown_node"
    status, body, _ = raw(server, "POST", "/runs", json.dumps({"workflow": to_dict(text_graph("画像 «ü»"))}),
                          headers=JSON)
    assert status == 202
    run = finished(server, body["id"])
    status, data, hdrs = raw(server, "GET", run["outputs"][0])
    assert status == 200 and data == b"6:x"
    assert "filename*=UTF-8''%E7%94%BB%E5%83%8F%20%C2%AB%C3%BC%C2%BB_00001.txt" in hdrs["content-disposition"]
    with socket.create_connection(server.address, timeout=TIMEOUT) as s:  # a raw UTF-8 request path
        s.sendall("GET /runs/画像 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        assert b" 404 " in _recv_all(s).split(b"\r\n")[0]


def test_event_streams_are_capped(tmp_path):
    with small_server(tmp_path, max_streams=1) as srv:
        conn = http.client.HTTPConnection(*srv.address, timeout=TIMEOUT)
        conn.request("GET", "/events")
        assert conn.getresponse().status == 200
        wait_until(lambda: srv.api.hub.subscribers == 1, TIMEOUT)
        status, body, hdrs = raw(srv, "GET", "/events")
        assert status == 503 and body["error"] == "busy" and "retry-after" in hdrs
        conn.close()


def test_redactor_replaces_folders_at_component_boundaries_and_other_absolute_paths():
    from nodegraph.server.redact import Redactor

    r = Redactor([("/srv/in", "<input>"), ("/tmp", "<tmp>"), ("/home/ann", "~")])
    assert r.text("cannot read /srv/in/a.png") == "cannot read <input>/a.png"
    assert r.text("see /tmpdata/x and /home/ann/.cache/m") == "see <path> and ~/.cache/m"
    assert r.text("C:\\Users\\ann\\x.png; (/usr/lib/python3/x.py)") == "<path>; (<path>)"
    assert r.text("portraits/img and 1/2") == "portraits/img and 1/2"  # relative names stay
    assert r.value({"traceback": "Traceback…", "x": ["/etc/passwd"], "k" * 9: "y" * 9}, max_text=8) == {
        "x": ["<path>"], "kkkkkkkk… (1 more characters)": "yyyyyyyy… (1 more characters)"}


def test_only_a_few_workflows_are_validated_at_once(tmp_path):
    with small_server(tmp_path, max_validating=1, request_seconds=1.0) as srv:
        assert srv.api.submit_slots.acquire(timeout=TIMEOUT)  # another submission is being validated
        try:
            status, body, hdrs = raw(srv, "POST", "/runs", workflow_body(), headers=JSON)
            assert status == 503 and body["error"] == "busy" and "retry-after" in hdrs
        finally:
            srv.api.submit_slots.release()
        assert raw(srv, "POST", "/runs", workflow_body(), headers=JSON)[0] == 202


def test_refused_requests_with_large_bodies_still_get_their_answer(server):
    # Closing with an unread body resets the connection: the client would see a broken pipe.
    for body, headers, expected in ((b"x" * 3_000_000, {"Content-Type": "text/plain"}, 415),
                                    (b"x" * 9_000_000, JSON, 413),
                                    (b"x" * 3_000_000, {**JSON, "Host": "evil.example"}, 403)):
        status, reply, _ = raw(server, "POST", "/runs", body, headers=headers)
        assert status == expected and isinstance(reply, dict)
    assert queued(server) == 0
