"""The agent's HTTP surface (FastAPI): health, state, intent; bearer auth and a body-size cap.

Owns status codes and the mapping of FrrError/IntentConflict to 503/409. The work itself is
IntentService's; this module must not know vtysh or config syntax. Never logs or echoes the token.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nva_agent.frr import Frr, FrrError, FrrPort
from nva_agent.intent import IntentConflict, IntentService
from nva_agent.models import AgentState, BgpIntent, ErrorBody, Health, IntentResult
from nva_agent.settings import AgentSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_bearer = HTTPBearer(auto_error=False, description="Bearer token from NVA_AGENT_TOKEN / NVA_AGENT_TOKEN_FILE")


class Unauthorized(Exception):
    pass


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


def create_app(settings: AgentSettings, frr: FrrPort | None = None) -> FastAPI:
    service = IntentService(frr or Frr(settings.frr), settings.timing)
    token = settings.token.encode()

    async def authorized(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        # compare_digest: the time taken must not tell an attacker how much of a guess was right
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token):
            raise Unauthorized

    app = FastAPI(
        title="NVA agent",
        version="1.0.0",
        description=(
            "Runs on the NVA next to FRR and brings its BGP config to an intent. "
            "A change that does not verify is rolled back and answered with **200**, "
            "`applied: false`, `rolled_back: true` and the reason in `message` (an outcome, not an error). "
            "409 means the intent cannot be applied safely as asked (e.g. FRR runs another local AS). "
            "503 means FRR or vtysh is not answering."
        ),
    )

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse({"detail": "missing or wrong bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(FrrError)
    async def _frr_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"FRR unavailable: {exc}"}, 503)

    @app.exception_handler(IntentConflict)
    async def _conflict(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409)

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
        """No auth: says whether bgpd answers through vtysh."""
        try:
            await service.health()
        except FrrError as exc:
            return JSONResponse({"status": "unavailable", "frr": False, "reason": str(exc)}, 503)
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
            409: {"model": ErrorBody, "description": "intent conflicts with FRR (e.g. local AS)"},
        },
        dependencies=[Depends(authorized)],
    )
    async def put_intent(intent: BgpIntent) -> IntentResult:
        """Idempotent: render, validate (vtysh -C), reload, soft-clear, verify, or roll back."""
        return await service.apply(intent)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def openapi_json(app: FastAPI) -> str:
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
