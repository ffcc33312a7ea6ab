"""Fan-out for fleets: one Storage queue message per target, reconciled by a queue-triggered worker.

Owns the message format (versioned JSON, strictly parsed) and the queue adapter that sends it
base64-encoded, which is what the Functions queue trigger decodes by default. Must not know how a
target is reconciled; the host, not this module, retries messages and moves them to the poison queue.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from reconciler.errors import PermanentError, TransientError

VERSION = 1
POISON_SUFFIX = "-poison"  # the Functions host's name for a queue's poison queue
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")  # desired.Name
_KEYS = {"v", "target", "tick", "origin"}
_MAX_BODY = 4096  # our messages are ~120 bytes; anything near the 64 KiB queue limit is not ours


class BadMessage(PermanentError):
    """A queue message that can never succeed (not ours, or malformed): record it, do not retry."""


@dataclass(frozen=True)
class FanoutMessage:
    """Reconcile one target, because a timer tick (or an operator) asked at `tick`."""

    target: str
    tick: datetime
    origin: str = "timer"

    def to_json(self) -> str:
        return json.dumps(
            {"v": VERSION, "target": self.target, "tick": self.tick.isoformat(), "origin": self.origin},
            separators=(",", ":"),
        )


def poison_queue(queue: str) -> str:
    return queue + POISON_SUFFIX


def parse_message(body: bytes | str) -> FanoutMessage:
    """The message the trigger delivered (already base64-decoded by the host). BadMessage if not ours."""
    if isinstance(body, bytes):
        if len(body) > _MAX_BODY:
            raise BadMessage(f"message of {len(body)} bytes is too large to be a fan-out message")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMessage("message is not UTF-8 text") from exc
    if len(body) > _MAX_BODY:
        raise BadMessage(f"message of {len(body)} characters is too large to be a fan-out message")
    try:
        data: Any = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadMessage(f"message is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(data, dict):
        raise BadMessage(f"message must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise BadMessage(f"unknown key(s) in message: {', '.join(unknown)}")
    if data.get("v") != VERSION:
        raise BadMessage(f"message version {data.get('v')!r} is not {VERSION}")
    target, tick, origin = data.get("target"), data.get("tick"), data.get("origin", "timer")
    if not isinstance(target, str) or not _TARGET.match(target):
        raise BadMessage(f"message target {target!r} is not a target name")
    if not isinstance(origin, str) or not origin.isidentifier() or len(origin) > 20:
        raise BadMessage(f"message origin {origin!r} is not a word")
    if not isinstance(tick, str):
        raise BadMessage("message tick must be an ISO 8601 time")
    try:
        at = datetime.fromisoformat(tick)
    except ValueError as exc:
        raise BadMessage(f"message tick {tick!r} is not an ISO 8601 time") from exc
    if at.tzinfo is None:
        raise BadMessage(f"message tick {tick!r} has no timezone")
    return FanoutMessage(target=target, tick=at, origin=origin)


class FanoutQueue:
    """The fan-out queue over one storage account. Build once per worker; close it."""

    def __init__(self, connection_string: str, queue: str, *, retries: int = 3) -> None:
        self.queue = queue
        self._client = QueueClient.from_connection_string(
            connection_string,
            queue,
            # The queue trigger expects base64 bodies (host.json messageEncoding, the default).
            message_encode_policy=TextBase64EncodePolicy(),
            retry_total=retries,
            connection_timeout=10,
            read_timeout=30,
        )

    async def ensure(self) -> None:
        try:
            await self._client.create_queue()
        except ResourceExistsError:
            pass  # made by an earlier worker or by the host's listener
        except AzureError as exc:
            raise TransientError(f"fan-out queue {self.queue!r}: cannot create: {_first_line(exc)}") from exc

    async def enqueue(self, messages: Iterable[FanoutMessage], ttl_s: int, *, delay_s: float = 0) -> int:
        """Send one message per target; `ttl_s` lets a tick's messages expire before the next tick
        sends fresh ones, so a stalled worker pool does not build a backlog of stale passes.
        `delay_s` keeps them invisible that long (whole seconds: the queue's visibility timeout)."""
        sent = 0
        visible = math.ceil(delay_s) if delay_s > 0 else None
        for m in messages:
            try:
                await self._client.send_message(m.to_json(), time_to_live=ttl_s, visibility_timeout=visible)
            except AzureError as exc:
                raise TransientError(
                    f"fan-out queue {self.queue!r}: sent {sent}, failed at target {m.target!r}: {_first_line(exc)}"
                ) from exc
            sent += 1
        return sent

    async def close(self) -> None:
        await self._client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
