"""The reconciler's client for the NVA agent's HTTP contract (schemas/agent.openapi.json).

Owns HTTP to one agent: bearer auth, TLS (a CA to trust, a client certificate for mutual TLS,
and no plain http:// unless the caller says the agent is a lab one), timeouts, bounded retries
of the idempotent calls, and the translation of the planner's `plan.Intent` into the request
body, of the agent's state into `observed.AgentView` (it is the service's AgentPort), and of
failures into reconciler.errors:

    connect error, timeout, 5xx (incl. 503 "FRR unavailable"), 408, 429 -> TransientError
    401, 403 (outside the NVA's policy), 409 (operator config in the way), 413, 422, other 4xx,
    a body that breaks the contract, an intent the agent rolled back -> PermanentError
    an http:// URL without allow_http                                  -> ConfigurationError

It must not know FRR, the drift model or what the reconciler does with the answers. The token
is never logged and never part of an exception message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from reconciler.errors import ConfigurationError, PermanentError, TransientError
from reconciler.observed import AgentNeighborView, AgentView, Route
from reconciler.plan import Intent
from reconciler.retry_after import retry_after

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class IntentResult:
    changed: bool
    applied: bool
    rolled_back: bool
    dry_run: bool
    changes: tuple[str, ...]
    state: AgentView
    message: str


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    """Tries per call, first included; the reconciler's next pass is the real retry."""
    backoff: float = 0.2
    """Seconds before the second try, doubled each time (0.2, 0.4): small, the pass has a budget."""


class AgentClient:
    """Async client for one agent. Build once per worker; `aclose()` (or `async with`) at the end."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        verify: str | bool = True,
        timeout: float = 15.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        client_cert: tuple[str, str] | None = None,
        allow_http: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.startswith("https://") and not allow_http:
            raise ConfigurationError(
                f"agent URL {self.base_url} is not https://: its bearer token would cross the network in clear "
                "(mark the peer agent_lab: true only for a lab agent)"
            )
        self._retry = retry
        # a CA path (the lab's or the NVA's own CA) or True/False; never disable silently
        verify_arg: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        if client_cert is not None:
            # mutual TLS: the agent pins this certificate (NVA_AGENT_TLS_CLIENT_CA)
            if not isinstance(verify_arg, ssl.SSLContext):
                verify_arg = ssl.create_default_context() if verify_arg else _unverified_context()
            try:
                verify_arg.load_cert_chain(*client_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(f"agent client certificate {client_cert[0]} cannot be loaded: {exc}") from exc
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify_arg,
            # an intent waits for FRR's read-back (up to ~10 s on the agent): keep read generous
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )

    def __repr__(self) -> str:  # keeps the token (in the client's headers) out of any repr
        return f"AgentClient({self.base_url!r})"

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- calls ----------------------------------------------------------------------------
    async def health(self) -> bool:
        """True when the agent says FRR answers; False on 503; TransientError if unreachable."""
        resp = await self._request("GET", "/v1/health", retry=False, ok=(200, 503))
        return resp.status_code == 200

    async def state(self) -> AgentView:
        resp = await self._request("GET", "/v1/state")
        return _parse(resp, _state)

    async def apply_intent(self, intent: Intent, *, dry_run: bool = False) -> IntentResult:
        # PUT of a whole intent is idempotent by the contract: retrying it is safe
        resp = await self._request("PUT", "/v1/bgp/intent", json=_intent_body(intent, dry_run))
        return _parse(resp, _intent_result)

    # -- the service's AgentPort: what a pass reads and how a fix reads in its outcome --------------
    async def view(self) -> AgentView:
        return await self.state()

    async def apply(self, intent: Intent) -> str:
        """Apply for real; the one-line summary a step's outcome carries. A rollback (the read-back
        did not match, the previous config is back) is a PermanentError: the fix did not happen."""
        result = await self.apply_intent(intent)
        if result.rolled_back:
            raise PermanentError(f"agent rolled back: {result.message}")
        if not result.changed:
            return "agent: no change needed"
        return "agent: " + "; ".join(result.changes[:10])

    async def _request(
        self, method: str, path: str, *, json: Any = None, retry: bool = True, ok: tuple[int, ...] = (200,)
    ) -> httpx.Response:
        attempts = self._retry.attempts if retry else 1
        delay = self._retry.backoff
        last: TransientError | None = None
        for attempt in range(1, attempts + 1):
            try:
                resp = await self._http.request(method, path, json=json)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = TransientError(f"agent {self.base_url}: {method} {path}: {type(exc).__name__}: {exc}")
                last.__cause__ = exc
            else:
                if resp.status_code in ok:
                    return resp
                if resp.status_code < 500 and resp.status_code not in _RETRYABLE_4XX:
                    raise PermanentError(
                        f"agent {self.base_url}: {method} {path}: HTTP {resp.status_code}: {_detail(resp)}"
                    )
                last = TransientError(
                    f"agent {self.base_url}: {method} {path}: HTTP {resp.status_code}: {_detail(resp)}"
                )
                delay = max(delay, retry_after(resp.headers, _MAX_RETRY_AFTER) or 0.0)
            if attempt < attempts:
                log.info(
                    "agent %s: %s %s failed (%s); retry %d in %.1f s",
                    self.base_url,
                    method,
                    path,
                    last,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                delay *= 2
        assert last is not None
        raise last


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# 429 (a proxy or the agent shedding load) and 408 say "later", like a 5xx: retried, then transient.
_RETRYABLE_4XX = frozenset({408, 429})
_MAX_RETRY_AFTER = 5.0  # seconds; a longer wait is the next pass's job


# -- parsing ---------------------------------------------------------------------------------
def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        err = body.get("error")  # the ARM-style {"error": {"code", "message"}} some implementations use
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        detail = str(body.get("detail") or body.get("reason") or body)
        if body.get("rule"):  # 403: the NVA's local policy refused it; name the rule for the operator
            detail = f"refused by the NVA's policy (rule {body['rule']}): {detail}"
        return detail[:300]
    return str(body)[:300]


def _parse(resp: httpx.Response, fn: Callable[[dict[str, Any]], T]) -> T:
    try:
        return fn(resp.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(
            f"agent answered {resp.request.url.path} with a body that breaks the contract: {exc}"
        ) from exc


def _intent_body(intent: Intent, dry_run: bool) -> dict[str, Any]:
    # schemas/agent.openapi.json BgpIntent: neighbors as {ip, asn} objects; `prefixes: []` withdraws
    return {
        "local_asn": intent.local_asn,
        "neighbors": [{"ip": ip, "asn": asn} for ip, asn in intent.neighbors],
        "prefixes": list(intent.prefixes),
        "next_hop": intent.next_hop,
        "dry_run": dry_run,
    }


def _route(d: dict[str, Any]) -> Route:
    return Route(prefix=str(d["prefix"]), next_hop=str(d["next_hop"]), as_path=str(d["as_path"]))


def _neighbor(d: dict[str, Any]) -> AgentNeighborView:
    return AgentNeighborView(
        ip=str(d["ip"]),
        remote_asn=int(d["remote_asn"]),
        state=str(d["state"]),
        advertised=tuple(_route(r) for r in d["advertised"]),
        uptime_ms=int(d["uptime_ms"]),
    )


def _state(d: dict[str, Any]) -> AgentView:
    return AgentView(
        local_asn=None if d["local_asn"] is None else int(d["local_asn"]),
        config_hash=str(d["config_hash"]),
        neighbors=tuple(_neighbor(n) for n in d["neighbors"]),
        router_id=None if d.get("router_id") is None else str(d["router_id"]),
    )


def _intent_result(d: dict[str, Any]) -> IntentResult:
    return IntentResult(
        changed=bool(d["changed"]),
        applied=bool(d["applied"]),
        rolled_back=bool(d["rolled_back"]),
        dry_run=bool(d["dry_run"]),
        changes=tuple(str(c) for c in d["changes"]),
        state=_state(d["state"]),
        message=str(d["message"]),
    )
