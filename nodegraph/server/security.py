"""Who may talk to the server: the browser-facing gate in front of every route.

A server on 127.0.0.1 is reachable from any web page the user has open.  A page
cannot read our answers (no CORS headers are ever sent), but it can *send*:
"simple" cross-origin POSTs need no preflight, and DNS rebinding points an
attacker's host name at 127.0.0.1 so that the browser even lets the page read
the replies.  So, before any route runs:

* ``Host`` must name this server: a loopback name (``localhost``,
  ``127.0.0.1``, ``[::1]``), the address it was bound to, or a name the
  operator allowed -- with our port or none.  A rebinding page sends its own
  host name and is refused.  When bound to a wildcard address (``0.0.0.0``),
  IP-literal hosts are accepted too: rebinding needs a DNS name.
* ``Origin``, when a browser sends one, must be that same server (``null``,
  from sandboxed frames and ``file:`` pages, is refused), and
  ``Sec-Fetch-Site`` must be ``same-origin`` or ``none``.
* State-changing methods need ``Content-Type: application/json``, which a page
  cannot send cross-origin without a preflight we never answer.
* With a token configured, ``Authorization: Bearer <token>`` (compared in
  constant time).  A token is required when binding beyond loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .routes import Response, error

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_key(host: str) -> str:
    """``::1`` -> ``[::1]``; names lower-cased: the form a ``Host`` header uses."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _split_host(value: str) -> tuple[str, str | None] | None:
    """``"localhost:8188"`` -> ("localhost", "8188"); ``"[::1]"`` -> ("[::1]", None); None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@ \t\\"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        return name, rest[1:] if rest else None
    name, colon, port = value.partition(":")
    return name, port if colon else None


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass
class Access:
    """The gate's configuration: which ``Host`` names are ours, our port, the token (if any)."""

    bind_host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    extra_hosts: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.extra_hosts = frozenset(_host_key(h) for h in self.extra_hosts)

    @property
    def host_names(self) -> frozenset[str]:
        names = set(LOOPBACK_NAMES) | self.extra_hosts
        if _host_key(self.bind_host) not in _WILDCARDS:
            names.add(_host_key(self.bind_host))
        return frozenset(names)

    def host_allowed(self, value: str) -> bool:
        parts = _split_host(value)
        if parts is None:
            return False
        name, port = parts
        if port is not None and port != str(self.port):
            return False
        if name in self.host_names:
            return True
        return _host_key(self.bind_host) in _WILDCARDS and _is_ip_literal(name)

    def origin_allowed(self, origin: str) -> bool:
        scheme, sep, rest = origin.strip().partition("://")
        if not sep or scheme.lower() != "http" or "/" in rest:
            return False  # "null", file:, https: (we serve plain http), or not an origin at all
        return self.host_allowed(rest)

    def token_ok(self, authorization: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.token.encode())

    def check(self, method: str, headers: Mapping[str, str]) -> Response | None:
        """The refusal to send, or None when the request may go on to its route."""
        if not self.host_allowed(headers.get("Host") or ""):
            return error(403, "forbidden_host", "the Host header does not name this server; connect through "
                         f"http://127.0.0.1:{self.port} (or an address the server was started with)")
        origin = headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin):
            return error(403, "cross_origin", "requests from web pages of other origins are refused")
        fetch_site = (headers.get("Sec-Fetch-Site") or "none").strip().lower()
        if fetch_site not in ("same-origin", "none"):
            return error(403, "cross_origin", f"requests from {fetch_site} web pages are refused")
        if not self.token_ok(headers.get("Authorization")):
            return Response(401, {"error": "unauthorized",
                                  "message": "this server needs 'Authorization: Bearer <token>' (see the "
                                             "token file named when it started)"},
                            headers={"WWW-Authenticate": 'Bearer realm="nodegraph"'})
        if method in STATE_CHANGING:
            ctype = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return error(415, "unsupported_media_type",
                             f"{method} requests need 'Content-Type: application/json'")
        return None


def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/nodegraph/server-token`` (else ``~/.config/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nodegraph" / "server-token"


def write_token_file(path: Path, token: str | None = None) -> str:
    """Write a fresh (or the given) token to ``path``, readable by this user only (0600),
    and return it.  The file is created with those permissions: it is never world-readable,
    not even for a moment."""
    token = token or secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # in case the file existed with looser permissions
    os.replace(tmp, path)
    return token


def resolve_token(option: str | None, bind_host: str, token_file: Path | None = None
                  ) -> tuple[str | None, Path | None]:
    """The token the server requires, from ``--token``: None (none, unless binding beyond
    loopback), ``"auto"`` (generate one into a user-only file) or the token itself.
    Returns (token, file written or None)."""
    if option is None and is_loopback(bind_host):
        return None, None
    if option is None or option == "auto":
        path = token_file or default_token_file()
        return write_token_file(path), path
    return option, None


def hosts_from(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v for v in (s.strip() for s in values) if v)
