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

from nodegraph import Executor
from nodegraph.server import NodegraphServer
from nodegraph.server.security import Access, resolve_token
from nodegraph.workflow import to_dict
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


_ = wait_until  # used by the bounds tests below
