"""AgentClient's error mapping and retries, through its transport seam (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from reconciler.agent_client import AgentClient, RetryPolicy
from reconciler.errors import ConfigurationError, PermanentError, TransientError
from reconciler.plan import Intent

STATE = {
    "local_asn": 65001,
    "router_id": "10.0.1.6",
    "config_hash": "sha256:" + "a" * 64,
    "neighbors": [
        {"ip": "10.0.2.4", "remote_asn": 65515, "state": "Established", "uptime_ms": 5,
         "advertised": [{"prefix": "0.0.0.0/0", "next_hop": "10.0.3.4", "as_path": "65001"}]},
    ],
}  # fmt: skip
TOKEN = "secret-token-0123456789"
FAST = RetryPolicy(attempts=3, backoff=0.001)


def client(handler: httpx.MockTransport) -> AgentClient:
    return AgentClient("http://agent.test", TOKEN, retry=FAST, transport=handler, allow_http=True)


async def test_5xx_is_retried_and_the_state_comes_back_typed_and_frozen() -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(503 if len(calls) < 3 else 200, json=STATE if len(calls) == 3 else {"detail": "x"})

    async with client(httpx.MockTransport(handler)) as c:
        state = await c.state()
    assert len(calls) == 3 and calls[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert state.neighbors[0].advertised[0].next_hop == "10.0.3.4"
    with pytest.raises(AttributeError):
        state.local_asn = 1  # type: ignore[misc]


async def test_connect_errors_become_a_transient_error_after_bounded_retries() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=req)

    async with client(httpx.MockTransport(handler)) as c:
        with pytest.raises(TransientError) as info:
            await c.state()
    assert calls == 3
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("status", [401, 403, 409, 413, 422])
async def test_4xx_is_permanent_and_not_retried(status: int) -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"detail": "no"})

    async with client(httpx.MockTransport(handler)) as c:
        with pytest.raises(PermanentError, match=str(status)):
            await c.apply_intent(Intent(65001, (("10.0.2.4", 65515),), ("0.0.0.0/0",), "10.0.3.4"))
    assert calls == 1


async def test_the_intent_is_sent_as_the_contract_body() -> None:
    seen: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        result = {"changed": True, "applied": True, "rolled_back": False, "dry_run": True,
                  "changes": ["+ network 0.0.0.0/0"], "state": STATE, "message": "ok"}  # fmt: skip
        return httpx.Response(200, json=result)

    async with client(httpx.MockTransport(handler)) as c:
        res = await c.apply_intent(Intent(65001, (("10.0.2.4", 65515),), (), None), dry_run=True)
    assert seen == [{"local_asn": 65001, "neighbors": [{"ip": "10.0.2.4", "asn": 65515}], "prefixes": [],
                     "next_hop": None, "dry_run": True}]  # fmt: skip
    assert res.changes == ("+ network 0.0.0.0/0",)


async def test_a_body_that_breaks_the_contract_is_permanent() -> None:
    async with client(httpx.MockTransport(lambda req: httpx.Response(200, json={"local_asn": 1}))) as c:
        with pytest.raises(PermanentError, match="contract"):
            await c.state()


async def test_the_client_repr_does_not_show_the_token() -> None:
    async with AgentClient(
        "https://agent.test", TOKEN, transport=httpx.MockTransport(lambda r: httpx.Response(200))
    ) as c:
        assert TOKEN not in repr(c)


def test_the_client_refuses_a_plain_http_url_unless_told_it_is_a_lab() -> None:
    with pytest.raises(ConfigurationError, match="in clear"):
        AgentClient("http://10.0.1.6:8179", TOKEN)


async def test_a_policy_refusal_names_the_rule_in_the_permanent_error() -> None:
    body = {"detail": "prefix 192.0.2.0/24 is not in the policy", "rule": "prefixes"}
    transport = httpx.MockTransport(lambda r: httpx.Response(403, json=body))
    async with client(transport) as c:
        with pytest.raises(PermanentError, match=r"policy \(rule prefixes\): prefix 192\.0\.2\.0/24"):
            await c.apply_intent(Intent(65001, (("10.0.2.4", 65515),), ("192.0.2.0/24",), "10.0.3.4"))


async def test_a_retry_after_date_is_honoured_like_seconds() -> None:
    # RFC 9110 §10.2.3: Retry-After is delay-seconds or an HTTP-date; the agent's proxy may send either.
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    now = datetime.now(UTC)
    headers = {"Retry-After": format_datetime(now + timedelta(seconds=1), usegmt=True),
               "Date": format_datetime(now, usegmt=True)}  # fmt: skip
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(loop.time())
        return httpx.Response(429, json={"detail": "busy"}, headers=headers) if len(calls) == 1 else \
            httpx.Response(200, json=STATE)  # fmt: skip

    async with client(httpx.MockTransport(handler)) as c:
        await c.state()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.9


async def test_the_service_port_says_what_changed_and_a_rollback_is_permanent() -> None:
    result = {"changed": True, "applied": True, "rolled_back": False, "dry_run": False,
              "changes": ["+ network 0.0.0.0/0 route-map nva-agent-originate"], "state": STATE, "message": "ok"}
    answers = [result, {**result, "applied": False, "rolled_back": True, "message": "read-back did not match"},
               {**result, "changed": False, "changes": []}]  # fmt: skip

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers.pop(0))

    intent = Intent(65001, (("10.0.2.4", 65515),), ("0.0.0.0/0",), "10.0.3.4")
    async with client(httpx.MockTransport(handler)) as c:
        assert await c.apply(intent) == "agent: + network 0.0.0.0/0 route-map nva-agent-originate"
        with pytest.raises(PermanentError, match="agent rolled back: read-back did not match"):
            await c.apply(intent)
        assert await c.apply(intent) == "agent: no change needed"
