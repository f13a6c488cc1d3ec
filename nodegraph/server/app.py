"""The HTTP server: stdlib ``http.server`` dispatching on the route table.

No web framework on purpose: the API is small, the engine has no
dependencies, and a thread-per-connection server (capped, with read deadlines:
:mod:`nodegraph.server.connections`) gives each client, including the
long-lived ``/events`` streams, its own thread while one worker thread owns
the executor (:mod:`nodegraph.server.runs`).  Every request passes the gate of
:mod:`nodegraph.server.security` before its route runs.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..executor import Executor
from ..paths import PATH_POLICY, PathPolicy
from ..registry import Registry
from .connections import BoundedHTTPServer
from .limits import BadRequest, Limits, clip, content_length
from .redact import Redactor
from .routes import ROUTES, Request, Response, error
from .runs import EventHub, RunQueue
from .security import Access, is_loopback, resolve_token

KEEPALIVE_SECONDS = 15.0
DRAIN_SECONDS = 2.0
log = logging.getLogger("nodegraph.server")
_COMPILED = [(r, r.compile()) for r in ROUTES]


class Api:
    """What the handlers work with: the registry, the executor, the run queue, the event hub,
    and the redactor every engine-made text goes through before it is sent."""

    def __init__(self, executor: Executor, input_dir: str | Path | None = None, limits: Limits | None = None) -> None:
        self.executor = executor
        self.limits = limits or Limits()
        self.registry: Registry = executor.registry
        settings = executor.settings
        folder = Path(str(input_dir or settings.get("input_dir") or os.environ.get("NODEGRAPH_INPUT_DIR")
                          or "input")).absolute()
        # Server runs read and write only inside these folders (checked at validation, see nodegraph.paths).
        settings["input_dir"] = str(folder)
        settings[PATH_POLICY] = PathPolicy(folder, executor.output_dir)
        self.redact = Redactor.for_server(folder, executor.output_dir, settings.get("models_dir"))
        self.submit_slots = threading.BoundedSemaphore(self.limits.max_validating)
        self.hub = EventHub()
        self.runs = RunQueue(executor, self.hub, self.redact, max_queued=self.limits.max_queued,
                             max_kept=self.limits.max_kept)

    def event_stream(self) -> Iterator[bytes]:
        """SSE frames until the server closes: ``event: <kind>`` + ``data: <json>``, with a
        comment line every few seconds so proxies and clients see the connection alive."""
        q = self.hub.subscribe()
        try:
            yield b": connected\n\n"
            while not self.hub.closed.is_set():
                try:
                    event = q.get(timeout=KEEPALIVE_SECONDS)
                except queue.Empty:
                    yield b": keepalive\n\n"
                    continue
                if event is None:
                    return
                data = json.dumps(event, default=str)
                yield f"id: {event['seq']}\nevent: {event.get('kind', 'message')}\ndata: {data}\n\n".encode()
        finally:
            self.hub.unsubscribe(q)

    def dispatch(self, method: str, raw_path: str, body: bytes) -> Response:
        parts = urlsplit(raw_path)
        allowed = []
        for route, pattern in _COMPILED:
            m = pattern.match(parts.path)
            if m is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            req = Request(m.groupdict(), body, dict(parse_qsl(parts.query)))
            try:
                return route.handler(self, req)
            except Exception:  # a bug must answer 500, not drop the connection -- nor show a traceback
                log.exception("%s %s failed", method, parts.path)
                return error(500, "internal_error", "internal error (details are in the server's log)")
        if allowed:
            return error(405, "method_not_allowed", f"{method} is not allowed here; use {', '.join(allowed)}")
        return error(404, "not_found", f"no route {clip(parts.path, 200)!r}; see /openapi.json")


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Handler(BaseHTTPRequestHandler):
    server_version = "nodegraph"
    api: Api  # set on the subclass made per server
    access: Access  # likewise
    limits: Limits  # likewise
    server: BoundedHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def handle_one_request(self) -> None:
        self.server.expect_request(self.connection)  # the next request is due within the deadline
        super().handle_one_request()

    def _handle(self, method: str) -> None:
        try:
            refusal = self.access.check(method, self.headers)
            if refusal is not None:
                raise _Refused(refusal)
            if self.headers.get("Transfer-Encoding"):
                raise BadRequest("send the body with a Content-Length (chunked bodies are not accepted)",
                                 411, "length_required")
            length = content_length(self.headers.get_all("Content-Length") or [], self.limits.max_body)
        except (BadRequest, _Refused) as exc:
            self._discard_body()
            self.server.request_received(self.connection)
            self.close_connection = True
            self._send(exc.response if isinstance(exc, _Refused) else error(exc.status, exc.code, str(exc)))
            return
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:  # the client hung up, or was cut off by the deadline
            self.close_connection = True
            return
        self.server.request_received(self.connection)
        self._send(self.api.dispatch(method, self.path, body))

    def _discard_body(self) -> None:
        """Read and drop a refused request's body (at most ``max_drain`` bytes, for at most
        ``DRAIN_SECONDS``): closing with unread data resets the connection, and the client would
        see a broken pipe instead of the refusal.  A client that announced a body and does not
        send it is not waited for long."""
        try:
            remaining = min(max(int((self.headers.get("Content-Length") or "0").strip()), 0), self.limits.max_drain)
        except ValueError:
            return
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            self.connection.settimeout(min(0.5, self.limits.read_timeout))
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    return
                remaining -= len(chunk)
        except OSError:
            return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests the stdlib refuses (bad request line, oversized headers, unknown
        method) get the same one-line JSON error as everything else, and the connection closes."""
        self.close_connection = True
        short = self.responses.get(code, ("error", ""))[0]
        self._send(Response(code, {"error": short.lower().replace(" ", "_"), "message": message or short},
                            headers={"Connection": "close"}))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PUT(self) -> None:  # noqa: N802 - answered 405 (after the gate), not stdlib's HTML 501
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def _send(self, resp: Response) -> None:
        if resp.stream is not None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                for chunk in resp.stream():
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except OSError:
                self.close_connection = True  # the client went away, or stopped reading
            return
        if isinstance(resp.body, bytes):
            data = resp.body
        else:
            data = (json.dumps(resp.body, indent=None, default=str) + "\n").encode()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class NodegraphServer:
    """A running API server.  ``start()`` serves from a background thread (tests, embedding);
    :func:`serve` runs it in the foreground for the CLI.

    A given ``executor`` becomes the server's: its settings gain the server's input folder and
    path policy, so every run it does is confined to the input and output folders."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8188, *, executor: Executor | None = None,
                 output_dir: str | Path = "output", device: str = "auto",
                 settings: Mapping[str, Any] | None = None, registry: Registry | None = None,
                 verbose: bool = False, token: str | None = None, allowed_hosts: frozenset[str] = frozenset(),
                 input_dir: str | Path | None = None, limits: Limits | None = None) -> None:
        # Runs happen on the queue's worker thread (plain Python, no Qt), so ask for the heap trim
        # there explicitly: by default an executor trims only on the main thread.
        self.executor = executor or Executor(registry, device=device, output_dir=output_dir, settings=settings,
                                             trim_after_run=True)
        self.limits = limits or Limits()
        self.api = Api(self.executor, input_dir, self.limits)
        self.access = Access(host, port, token, allowed_hosts)
        handler = type("Handler", (_Handler,), {"api": self.api, "access": self.access, "limits": self.limits,
                                                "timeout": self.limits.read_timeout})
        self.httpd = BoundedHTTPServer((host, port), handler, self.limits)
        self.access.port = self.address[1]  # the real one when asked for port 0
        self.httpd.verbose = verbose  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> NodegraphServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="nodegraph-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.api.hub.close()  # ends the /events streams
        self.api.runs.stop()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(10)
        self.httpd.server_close()

    def __enter__(self) -> NodegraphServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(host: str = "127.0.0.1", port: int = 8188, *, output_dir: str | Path = "output", device: str = "auto",
          settings: Mapping[str, Any] | None = None, token: str | None = None, token_file: Path | None = None,
          allowed_hosts: frozenset[str] = frozenset()) -> int:
    """Serve until Ctrl+C (the ``nodegraph serve`` command).  ``token``: None, "auto" or the token
    (see :func:`nodegraph.server.security.resolve_token`; binding beyond loopback implies "auto")."""
    registry = Registry.with_installed_packs()
    for pack, err in registry.pack_errors.items():
        print(f"nodegraph: warning: node pack {pack!r} failed to load: {err}", file=sys.stderr)
    registry.load_default_subgraphs()
    try:
        secret, written = resolve_token(token, host, token_file)
    except OSError as exc:
        print(f"nodegraph: cannot write the token file: {exc}", file=sys.stderr)
        return 2
    try:
        server = NodegraphServer(host, port, output_dir=output_dir, device=device, settings=settings,
                                 registry=registry, verbose=True, token=secret, allowed_hosts=allowed_hosts)
    except OSError as exc:
        print(f"nodegraph: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(host):
        print(f"nodegraph: WARNING: listening on {host}, not loopback: anyone who can reach this address and "
              "holds the token can run workflows and read outputs. Plain HTTP: use a trusted network.",
              file=sys.stderr)
    if written is not None:
        print(f"nodegraph: clients must send 'Authorization: Bearer <token>'; the token is in {written} "
              "(readable by this user only)", file=sys.stderr)
    elif secret is not None:
        print("nodegraph: clients must send 'Authorization: Bearer <token>' (the token given with --token)",
              file=sys.stderr)
    print(f"nodegraph: serving {server.url} (API description: {server.url}/openapi.json); Ctrl+C stops",
          file=sys.stderr)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.api.hub.close()
        server.api.runs.stop()
        server.httpd.server_close()
    return 0
