"""Fan-out for fleets: one Storage queue message per target, reconciled by a queue-triggered worker.

Owns the message format (versioned JSON, strictly parsed), the queue adapter that sends it
base64-encoded, which is what the Functions queue trigger decodes by default, and the host's queue
rules as host.json states them (`HostQueueRules`: how often and how far apart the host retries,
hence how long a message must live, and how long an idle queue may go unpolled). Must not know
how a target is reconciled; the host, not this module, retries messages and moves them to the
poison queue.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64EncodePolicy

from reconciler.errors import PermanentError
from reconciler.storage import StorageAccess, queue_client
from reconciler.storage_rules import storage_error
from reconciler.trigger import Trigger

VERSION = 1
POISON_SUFFIX = "-poison"  # the Functions host's name for a queue's poison queue
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")  # desired.Name
_KEYS = {"v", "target", "tick", "origin", "run", "dry_run"}
_RUN = re.compile(r"^[0-9a-f]{12}$")  # a pass id (service.new_pass_id)
_ORIGINS = frozenset(t.value for t in Trigger)
_MAX_BODY = 4096  # our messages are ~120 bytes; anything near the 64 KiB queue limit is not ours


class BadMessage(PermanentError):
    """A queue message that can never succeed (not ours, or malformed): record it, do not retry."""


@dataclass(frozen=True)
class FanoutMessage:
    """Reconcile one target, because a timer tick (or an operator) asked at `tick`.

    With `run` (a pass id) it carries on an HTTP-requested pass (`reconciler.runs`) whose worker
    went away: then `dry_run` is the request's, and `target` None means every target.
    """

    target: str | None
    tick: datetime
    origin: Trigger = Trigger.TIMER
    run: str | None = None
    dry_run: bool = False

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": VERSION, "target": self.target, "tick": self.tick.isoformat()}
        data["origin"] = self.origin.value
        if self.run is not None:
            data.update(run=self.run, dry_run=self.dry_run)
        return json.dumps(data, separators=(",", ":"))


# App settings that override host.json, as the host reads them (`AzureFunctionsJobHost__` + the
# JSON path joined by `__`): https://learn.microsoft.com/azure/azure-functions/functions-host-json#override-hostjson-values
_OVERRIDE = "AzureFunctionsJobHost__"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")  # .NET TimeSpan, [d.]hh:mm:ss


@dataclass(frozen=True)
class HostQueueRules:
    """What the Functions host does with a failing queue message (host.json `extensions.queues`,
    https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#hostjson-settings):
    it runs the function at most `max_dequeue_count` times, each try up to `function_timeout`, puts
    the message back for `visibility_timeout` after each failure ("the time interval between retries
    when processing of a message fails"), then moves it to `<queue>-poison`. Defaults are the
    documented ones (5, 00:00:00, and Flex Consumption's 30-minute default function timeout: "Function
    app timeout duration", https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout)."""

    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    function_timeout: timedelta = timedelta(minutes=30)
    # How long an idle queue may go unpolled: the listener backs off from 100 ms towards this
    # (QueuePollingIntervals.DefaultMaximum = 1 minute, azure-sdk-for-net
    # Microsoft.Azure.WebJobs.Extensions.Storage.Common/src/Listeners/QueuePollingIntervals.cs).
    max_polling_interval: timedelta = timedelta(minutes=1)

    @classmethod
    def load(cls, host_json: Path, environ: Mapping[str, str]) -> HostQueueRules:
        data: dict[str, Any] = json.loads(host_json.read_text())
        queues: dict[str, Any] = data.get("extensions", {}).get("queues", {})

        def setting(path: str, value: Any) -> Any:
            return environ.get(_OVERRIDE + path, value)

        def span(path: str, value: Any, default: timedelta) -> timedelta:
            text = setting(path, value)
            try:
                return default if text is None else _timespan(text)
            except ValueError as exc:
                # Read at start: the one line that stops the app must say where the value came from.
                raise ValueError(f"setting {_OVERRIDE}{path} (or its host.json value): {exc}") from None

        count = setting("extensions__queues__maxDequeueCount", queues.get("maxDequeueCount", cls.max_dequeue_count))
        if not str(count).strip().isdigit():
            raise ValueError(f"setting {_OVERRIDE}extensions__queues__maxDequeueCount (or its host.json value): "
                             f"{count!r} is not a whole number")  # fmt: skip
        return cls(
            max_dequeue_count=int(count),
            visibility_timeout=span(
                "extensions__queues__visibilityTimeout", queues.get("visibilityTimeout"), cls.visibility_timeout
            ),
            function_timeout=span("functionTimeout", data.get("functionTimeout"), cls.function_timeout),
            max_polling_interval=span(
                "extensions__queues__maxPollingInterval", queues.get("maxPollingInterval"), cls.max_polling_interval
            ),
        )

    def retry_budget(self) -> timedelta:
        """How long a message may need before the host gives up on it: every try may run to the
        function timeout and is followed by the visibility timeout."""
        return self.max_dequeue_count * (self.function_timeout + self.visibility_timeout)

    def message_ttl(self, interval: timedelta) -> int:
        """Seconds a fan-out message must live: its whole retry budget (a message that expires
        before its last try is lost without reaching the poison queue), and at least one tick."""
        return int(max(self.retry_budget(), interval, timedelta(seconds=60)).total_seconds())


def _timespan(text: Any) -> timedelta:
    m = _TIMESPAN.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a [d.]hh:mm:ss time span")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


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
    run, dry_run = data.get("run"), data.get("dry_run", False)
    if run is not None and (not isinstance(run, str) or not _RUN.match(run)):
        raise BadMessage(f"message run {run!r} is not a pass id")
    if not isinstance(dry_run, bool) or (dry_run and run is None):
        raise BadMessage("message dry_run must be true or false, and only with a run")
    if (target is not None or run is None) and (not isinstance(target, str) or not _TARGET.match(target)):
        raise BadMessage(f"message target {target!r} is not a target name")
    if not isinstance(origin, str) or origin not in _ORIGINS:
        raise BadMessage(f"message origin {str(origin)[:20]!r} is not one of {', '.join(sorted(_ORIGINS))}")
    if not isinstance(tick, str):
        raise BadMessage("message tick must be an ISO 8601 time")
    try:
        at = datetime.fromisoformat(tick)
    except ValueError as exc:
        raise BadMessage(f"message tick {tick!r} is not an ISO 8601 time") from exc
    if at.tzinfo is None:
        raise BadMessage(f"message tick {tick!r} has no timezone")
    return FanoutMessage(target=target, tick=at, origin=Trigger(origin), run=run, dry_run=dry_run)


class FanoutQueue:
    """The fan-out queue over one storage account. Build once per worker; close it."""

    def __init__(self, connection_string: str | StorageAccess, queue: str, *, retries: int = 3) -> None:
        self.queue = queue
        self._client = queue_client(
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
            raise storage_error(f"fan-out queue {self.queue!r}", "create", exc) from exc

    async def enqueue(self, messages: Iterable[FanoutMessage], ttl_s: int, *, delay_s: float = 0) -> int:
        """Send one message per target, living `ttl_s` (HostQueueRules.message_ttl: long enough for
        every retry the host will make, so a failing target reaches the poison queue). `delay_s`
        keeps them invisible that long first (whole seconds: the queue's visibility timeout)."""
        sent = 0
        visible = math.ceil(delay_s) if delay_s > 0 else None
        for m in messages:
            try:
                await self._client.send_message(m.to_json(), time_to_live=ttl_s, visibility_timeout=visible)
            except AzureError as exc:
                raise storage_error(
                    f"fan-out queue {self.queue!r}", f"sent {sent}, failed at target {m.target!r}", exc
                ) from exc
            sent += 1
        return sent

    async def send_later(self, message: FanoutMessage, delay_s: int, ttl_s: int) -> tuple[str, str]:
        """Send `message` invisible for `delay_s` (a fallback that runs only if nobody `forget`s it
        first); returns its (id, pop receipt)."""
        try:
            sent = await self._client.send_message(message.to_json(), visibility_timeout=delay_s, time_to_live=ttl_s)
        except AzureError as exc:
            raise storage_error(f"fan-out queue {self.queue!r}", "send", exc) from exc
        return str(sent.id), str(sent.pop_receipt)

    async def forget(self, receipt: tuple[str, str]) -> None:
        """Delete a message sent by `send_later` (its work was done). Gone already is fine."""
        try:
            await self._client.delete_message(receipt[0], receipt[1])
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise storage_error(f"fan-out queue {self.queue!r}", "delete", exc) from exc

    async def close(self) -> None:
        await self._client.close()
