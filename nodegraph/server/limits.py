"""Resource bounds of the server: every request costs at most a known, small amount.

Nothing a client sends may make the server do work or send replies out of
proportion to a bounded request: the body, the number of overrides and
requested outputs, the nesting of the JSON, the number and length of the
problems reported back, the queue and the finished records are all capped, and
connections that dribble their request in (slowloris) are cut after a deadline
while the number of connection threads is bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """The server's bounds (defaults suit one artist's machine; tests shrink them)."""

    max_body: int = 8 * 1024 * 1024  # bytes of a request body
    max_drain: int = 64 * 1024 * 1024  # bytes of a refused body read and dropped, so the client sees the refusal
    max_depth: int = 64  # nesting of the JSON body
    max_overrides: int = 256
    max_outputs: int = 64  # ids in a run's "outputs" list
    max_problems: int = 50  # validation problems in one reply (deduplicated first)
    max_text: int = 500  # characters of any message in a reply
    max_queued: int = 16  # runs waiting; one more gets 429
    max_validating: int = 2  # POST /runs parsed and validated at once (the others wait their turn)
    max_kept: int = 200  # finished run records kept
    max_connections: int = 64  # connection threads; more get 503 at once
    max_streams: int = 16  # open /events streams (each holds a connection thread)
    read_timeout: float = 10.0  # seconds one socket read may block
    request_seconds: float = 30.0  # to receive a whole request (line, headers, body) or the next one


class BadRequest(ValueError):
    """A request that cannot be served: the status, error code and one-line message to send back."""

    def __init__(self, message: str, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.code = status, code


_DIGITS = re.compile(r"[0-9]{1,15}")


def content_length(values: list[str], max_body: int) -> int:
    """The body length announced by ``Content-Length`` headers; :class:`BadRequest` (400/413)
    when it is malformed, conflicting, negative or too large."""
    if not values:
        return 0
    if len({v.strip() for v in values}) > 1:
        raise BadRequest("conflicting Content-Length headers")
    text = values[0].strip()
    if not _DIGITS.fullmatch(text):
        raise BadRequest("Content-Length must be a non-negative whole number of bytes")
    length = int(text)
    if length > max_body:
        raise BadRequest(f"request body over {max_body} bytes", 413, "too_large")
    return length


def load_json(body: bytes, max_depth: int) -> Any:
    """Parse a request body; :class:`BadRequest` (never anything else) when it is not usable JSON."""
    try:
        value = json.loads(body or b"null")
    except RecursionError:
        raise BadRequest(f"body is nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # Python's limit on integer digits (a 4,301-digit number)
        raise BadRequest("body holds a number with too many digits") from None
    if too_deep(value, max_depth):
        raise BadRequest(f"body is nested more than {max_depth} levels deep")
    return value


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than ``max_depth`` (iterative: deep input cannot overflow it)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Iterable[Any] = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((c, depth + 1) for c in children)
    return False


def clip(text: str, max_text: int) -> str:
    return text if len(text) <= max_text else text[:max_text] + f"… ({len(text) - max_text} more characters)"


def bound_problems(problems: Iterable[dict[str, Any]], limits: Limits) -> tuple[list[dict[str, Any]], int]:
    """Problems deduplicated, their texts clipped, at most ``max_problems`` of them; and how many
    distinct ones were left out.  A request repeating one mistake a million times gets one line."""
    seen: set[tuple[Any, ...]] = set()
    kept: list[dict[str, Any]] = []
    omitted = 0
    for p in problems:
        p = {k: clip(v, limits.max_text) if isinstance(v, str) else v for k, v in p.items()}
        key = (p.get("kind"), p.get("node_id"), p.get("input"), p.get("message"))
        if key in seen:
            continue
        seen.add(key)
        if len(kept) < limits.max_problems:
            kept.append(p)
        else:
            omitted += 1
    return kept, omitted
