"""Delivery to a Teams Workflows webhook over httpx: retries, Retry-After, pacing, and secrecy.

Owns the HTTP conversation with the webhook and keeping its URL (a bearer secret: the `sig`
query parameter is the credential) out of logs, exceptions and return values. Must not know what
a card says or how the outbox orders messages.

Errors (reconciler.errors): TransientError (retry on a later pass: 429/5xx/timeouts after the
retry budget), PermanentError (the endpoint refuses: 401/403/404…), MessageRejected (this one
message can never be delivered: 400/413). None of them chains the httpx exception: its request
carries the URL, and a logged traceback would print it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import httpx

from reconciler.errors import PermanentError, TransientError
from reconciler.outbox import MessageRejected
from reconciler.retry_after import retry_after

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

REDACTED = "[redacted]"


class _Scrubber(logging.Filter):
    """Rewrites log records that contain a registered secret. Installed on the loggers of the
    HTTP libraries, because httpx logs every request line — full URL included — at INFO."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            clean = self.redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_SCRUBBER = _Scrubber()
_SCRUBBED_LOGGERS = ("httpx", "httpcore")


def protect(url: str) -> None:
    """Register a secret URL: it and its credential-bearing parts are scrubbed from HTTP-library logs."""
    parts = urlsplit(url)
    pieces = {url, parts.query, f"{parts.scheme}://{parts.netloc}{parts.path}", parts.path}
    # Any query value could be the credential (sig, code, token); short ones are flags like sv=1.0.
    pieces |= {value for _, value in parse_qsl(parts.query) if len(value) >= 8}
    pieces |= {segment for segment in parts.path.split("/") if len(segment) >= 16}
    _SCRUBBER.secrets |= {p for p in pieces if len(p) >= 8}
    for name in _SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by [redacted]."""
    return _SCRUBBER.redact(text)


def display(url: str) -> str:
    """A loggable name for a secret URL: scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/{REDACTED}"


class Pacer:
    """At most one request start per `min_interval` seconds, across every caller sharing it.
    Teams throttles a webhook that receives more than about 4 requests per second."""

    def __init__(self, min_interval: float = 0.25, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            delay = self._next - self._clock()
            if delay > 0:
                await self._sleep(delay)
            self._next = max(self._clock(), self._next) + self.min_interval


class TeamsWebhook:
    """Posts serialized messages to one Workflows webhook. Build once per worker; `client` is owned
    by the caller. Satisfies reconciler.outbox.Sender."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        max_attempts: int = 5,
        max_total: float = 30.0,
        timeout: float = 10.0,
        max_retry_after: float = 60.0,
        pacer: Pacer | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`max_attempts` and `max_total` (seconds) bound one `send`; a Retry-After that would
        overrun `max_total` ends the attempt at once (the outbox retries on the next pass)."""
        protect(url)
        self._url = url
        self._client = client
        self.max_attempts = max_attempts
        self.max_total = max_total
        self.timeout = timeout
        self.max_retry_after = max_retry_after
        self._pacer = pacer or Pacer(clock=clock, sleep=sleep)
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"TeamsWebhook({display(self._url)})"

    async def send(self, payload: bytes, idempotency_key: str) -> None:
        """Deliver one message; return on any 2xx (Workflows answers 202 Accepted)."""
        started = self._clock()
        reason = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            await self._pacer.wait()
            delay: float | None = None
            try:
                response = await self._client.post(
                    self._url,
                    content=payload,
                    headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
                    timeout=self.timeout,
                )
            except httpx.TimeoutException as exc:
                reason = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                reason = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return
                detail = redact(response.text[:200])
                if status in (400, 413):
                    raise MessageRejected(f"Teams rejected the message: HTTP {status}: {detail}")
                if status != 429 and status != 408 and status < 500:
                    raise PermanentError(f"Teams webhook {display(self._url)} refused: HTTP {status}: {detail}")
                reason = f"HTTP {status}"
                delay = retry_after(response.headers, self.max_retry_after)
            if attempt == self.max_attempts:
                break
            if delay is None:
                delay = min(0.5 * 2 ** (attempt - 1), 8.0)
            if self._clock() - started + delay > self.max_total:
                reason += f"; next try in {delay:g} s would exceed the {self.max_total:g} s budget"
                break
            log.info("Teams webhook %s: %s, retrying in %.2f s", display(self._url), reason, delay)
            await self._sleep(delay)
        raise TransientError(f"Teams webhook {display(self._url)} not reached after {attempt} attempt(s): {reason}")


async def ping(url: str, client: httpx.AsyncClient, timeout: float = 10.0) -> None:
    """One dead-man's-switch ping (GET). The URL is a secret like the webhook's."""
    protect(url)
    try:
        response = await client.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        # `from None`: httpx exceptions carry the request, whose URL is the secret.
        raise TransientError(f"heartbeat {display(url)} failed: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise TransientError(f"heartbeat {display(url)} answered HTTP {response.status_code}")
