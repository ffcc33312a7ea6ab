"""The agent's HTTP surface (FastAPI): health, state, intent; bearer auth and a body-size cap.

Owns status codes and the mapping of PolicyViolation/IntentConflict/FrrError to 403/409/503,
and where the tokens and the policy come from (files re-read on change or SIGHUP). The work
itself is IntentService's; this module must not know vtysh or config syntax. Never logs or
echoes a token; the unauthenticated /v1/health says only fixed reason codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nva_agent import policy, tokens
from nva_agent.files import FileProblem, Watched
from nva_agent.frr import Frr, FrrError, FrrPort
from nva_agent.intent import IntentConflict, IntentService
from nva_agent.models import (
    AgentState,
    BgpIntent,
    ConflictBody,
    ErrorBody,
    Health,
    HealthReason,
    IntentResult,
    PolicyRefusal,
)
from nva_agent.settings import AgentSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_bearer = HTTPBearer(
    auto_error=False, description="Bearer token from NVA_AGENT_TOKEN_FILE (current or next) / NVA_AGENT_TOKEN"
)
log = logging.getLogger(__name__)


class Unauthorized(Exception):
    pass


class Sources:
    """Where the accepted tokens and the policy in force come from; `reload()` is SIGHUP."""

    def __init__(self, settings: AgentSettings) -> None:
        self._tokens: Watched[tokens.TokenSet] | None = None
        self._static = tokens.TokenSet(settings.token)
        if settings.token_file is not None:
            self._tokens = Watched(settings.token_file, tokens.parse_file, "token file")
        self._policy: Watched[policy.Policy] | None = None
        if not settings.lab or settings.policy_file.exists():
            self._policy = Watched(settings.policy_file, policy.parse, "policy file")

    def tokens(self) -> tokens.TokenSet | None:
        if self._tokens is None:
            return self._static
        try:
            return self._tokens.get()
        except FileProblem:
            return None  # fail closed: every call is 401 until the file is fixed (logged by Watched)

    def policy(self) -> policy.Policy | None:
        if self._policy is None:
            return None
        try:
            return self._policy.get()
        except FileProblem as exc:
            raise policy.PolicyViolation(policy.PolicyRule.POLICY_FILE, str(exc)) from exc

    def reload(self) -> None:
        for w in (self._tokens, self._policy):
            if w is not None:
                w.reload()


class BodyLimit:
    """Reads the whole request body up to `limit` bytes before the app sees it; more -> 413.

    Pure ASGI (not BaseHTTPMiddleware) so nothing is parsed, and no task is left behind, for
    a body that is too large.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    payload = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app(settings: AgentSettings, frr: FrrPort | None = None, sources: Sources | None = None) -> FastAPI:
    sources = sources or Sources(settings)
    service = IntentService(frr or Frr(settings.frr), settings.timing, policy_source=sources.policy)

    async def authorized(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        accepted = sources.tokens()
        if creds is None or accepted is None or not accepted.accepts(creds.credentials):
            raise Unauthorized

    docs = settings.docs  # unauthenticated: off unless asked for (NVA_AGENT_DOCS=1)
    app = FastAPI(
        title="NVA agent",
        version="1.1.0",
        description=(
            "Runs on the NVA next to FRR and brings its BGP config to an intent. "
            "A change that does not verify is rolled back and answered with **200**, "
            "`applied: false`, `rolled_back: true` and the reason in `message` (an outcome, not an error). "
            "403 means the intent is outside the NVA's local policy file (the body names the rule); "
            "409 means it cannot be applied without changing config the agent did not write "
            "(another local AS, an operator's outbound route-map on a Route Server neighbor). "
            "Neither touches FRR. 503 means FRR or vtysh is not answering."
        ),
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        lifespan=_reporting(settings, service, sources),
    )
    app.state.sources = sources

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Where and what, never the input: FastAPI's own 422 echoes it, and an Infinity or NaN
        # (which Python's json reads) cannot be written back as JSON, so that answer was a 500.
        detail = [{"loc": list(e["loc"]), "msg": str(e["msg"]), "type": str(e["type"])} for e in exc.errors()]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse({"detail": "missing or wrong bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(FrrError)
    async def _frr_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"FRR unavailable: {exc}"}, 503)

    @app.exception_handler(IntentConflict)
    async def _conflict(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IntentConflict)
        log.warning("intent refused (409): %s", exc)
        return JSONResponse(ConflictBody(detail=str(exc), conflicts=exc.conflicts).model_dump(), 409)

    @app.exception_handler(policy.PolicyViolation)
    async def _refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, policy.PolicyViolation)
        log.warning("intent refused by the local policy (403): %s", exc)
        return JSONResponse(PolicyRefusal(detail=exc.detail, rule=exc.rule.value).model_dump(), 403)

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
        413: {"model": ErrorBody, "description": "request body too large"},
        503: {"model": ErrorBody, "description": "FRR or vtysh not answering"},
    }

    @app.get(
        "/v1/health",
        response_model=Health,
        response_model_exclude_none=True,
        responses={503: {"model": Health, "description": "FRR or vtysh not answering"}},
    )
    async def health() -> Any:
        """No auth: says whether bgpd answers through vtysh (checked at most once a second; the
        reason is a fixed code)."""
        try:
            await service.health()
        except FrrError as exc:
            reason: HealthReason = exc.reason
            return JSONResponse({"status": "unavailable", "frr": False, "reason": reason.value}, 503)
        return Health(status="ok", frr=True)

    @app.get("/v1/state", response_model=AgentState, responses=errors, dependencies=[Depends(authorized)])
    async def get_state() -> AgentState:
        """BGP neighbors and what is advertised to each, read from vtysh JSON."""
        return await service.state()

    @app.put(
        "/v1/bgp/intent",
        response_model=IntentResult,
        responses={
            **errors,
            403: {"model": PolicyRefusal, "description": "intent outside the NVA's local policy; FRR untouched"},
            409: {
                "model": ConflictBody,
                "description": "intent conflicts with config the agent did not write (local AS, operator "
                "outbound route-map on a Route Server neighbor); FRR untouched",
            },
        },
        dependencies=[Depends(authorized)],
    )
    async def put_intent(intent: BgpIntent) -> IntentResult:
        """Idempotent: check the local policy, render, validate (vtysh -C), reload, soft-clear, verify, or roll back."""
        return await service.apply(intent)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def _reporting(settings: AgentSettings, service: IntentService, sources: Sources) -> Any:
    """While the app runs: report FRR changes to the reconciler, when NVA_AGENT_REPORT_URL is set."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.report_url:
            yield
            return
        from nva_agent.change_reports import ChangeReporter

        def token() -> tuple[str, ...]:
            accepted = sources.tokens()
            if accepted is None:
                return ()
            return (accepted.current, accepted.next) if accepted.next else (accepted.current,)

        reporter = ChangeReporter(service.frr, settings.report_url, settings.report_ip, token,
                                  apply_lock=service.apply_lock, own=lambda: service.own)  # fmt: skip
        task = asyncio.create_task(reporter.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def openapi_json(app: FastAPI) -> str:
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
