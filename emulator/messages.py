"""The emulator's request and response values, and the answers every part of it shares.

Owns `Request` (decoded once: path segments, query, lower-cased headers), `Response`, ARM's error
body, the agent's (FastAPI) error body, and the bearer-token rule. It must not know routes, the
world or the HTTP server library.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

from . import resources

# Every malformed body is the same truncated JSON, so a test can recognise it.
MALFORMED_BODY = b'{"id": "/subscriptions/truncated'


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    raw_path: str  # as sent (still URL-quoted), for building nextLink
    segments: tuple[str, ...]  # URL-decoded, original case
    query: dict[str, str]  # the first value of each parameter
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    @property
    def path(self) -> str:
        return "/" + "/".join(self.segments)

    @functools.cached_property
    def lower(self) -> tuple[str, ...]:
        """The segments lower-cased: ARM matches paths case-insensitively."""
        return tuple(s.lower() for s in self.segments)

    def json_body(self) -> Any:
        """The body as JSON (None when empty); raises ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def bearer(self) -> str | None:
        value = self.headers.get("authorization") or ""
        scheme, _, token = value.partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), dict(headers or {}))


def arm_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, resources.arm_error(code, message), headers)


def not_found(kind: str, name: str) -> Response:
    return arm_error(404, "ResourceNotFound", f"The Resource '{kind}/{name}' was not found.")


def agent_error(status: int, detail: object, headers: Mapping[str, str] | None = None) -> Response:
    """The real agent is a FastAPI app: its errors are `{"detail": ...}`."""
    return json_response(status, {"detail": detail}, headers)
