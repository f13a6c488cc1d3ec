"""Connections with bounds: a fixed number of threads, and a deadline to send each request.

``ThreadingHTTPServer`` starts a thread per connection and waits forever for a
request to arrive, so 200 connections that send one header byte every few
seconds (slowloris) hold 200 threads indefinitely.  Here:

* at most ``max_connections`` connections are served at once; one more gets an
  immediate ``503`` (written from the accept loop, no thread) and is closed;
* every socket read blocks at most ``read_timeout`` seconds;
* a connection has ``request_seconds`` to deliver a whole request (request line,
  headers and body), or the next one on a kept-alive connection.  A watchdog
  thread shuts down the sockets that are late, which wakes their blocked reads.
  Writing the answer (and the ``/events`` stream) is not under the deadline.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from .limits import Limits

log = logging.getLogger("nodegraph.server")
_BUSY = json.dumps({"error": "busy", "message": "too many open connections; retry shortly"}).encode() + b"\n"
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
               b"Connection: close\r\nContent-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


class BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a connection cap and per-request read deadlines."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: the stdlib's 5 makes a burst of clients wait for SYN retries

    def __init__(self, address: tuple[str, int], handler: Any, limits: Limits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadline_lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._watch, name="nodegraph-http-watchdog", daemon=True)
        self._watchdog.start()

    # -- deadlines ------------------------------------------------------------------------------
    def expect_request(self, conn: socket.socket) -> None:
        """The connection now owes us a request, within ``request_seconds``."""
        with self._deadline_lock:
            self._deadlines[conn] = time.monotonic() + self.limits.request_seconds

    def request_received(self, conn: socket.socket) -> None:
        with self._deadline_lock:
            self._deadlines.pop(conn, None)

    def _watch(self) -> None:
        period = min(0.25, self.limits.request_seconds / 4)
        while not self._closing.wait(period):
            now = time.monotonic()
            with self._deadline_lock:
                late = [c for c, t in self._deadlines.items() if t < now]
                for c in late:
                    del self._deadlines[c]
            for c in late:
                try:
                    c.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading it
                except OSError:
                    pass

    @property
    def open_requests(self) -> int:
        with self._deadline_lock:
            return len(self._deadlines)

    # -- the thread cap ------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_received(request)
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(_BUSY_REPLY)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke (cut by the deadline, reset by the client): log, no traceback on stderr."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()
