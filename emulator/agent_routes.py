"""The emulated NVA agents on the wire: `/agents/{ip}/v1/health`, `/v1/state`, `/v1/bgp/intent`.

Owns the agent's HTTP surface (schemas/agent.openapi.json): which path is which operation, the
per-NVA bearer token, FastAPI-style error bodies, and one intent at a time. What an intent means
and does to the world lives in `agent`; this module only wires it to HTTP. It must not know ARM
routes or the reconciler.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from . import agent
from .gate import Gate, reshape
from .messages import Request, Response, agent_error, json_response
from .world import Nva, World


@dataclasses.dataclass(frozen=True)
class AgentRoute:
    method: str
    op: str
    token: bool  # the NVA's bearer token is required (only health is open)


ROUTES = {
    ("health",): AgentRoute("GET", "agent.health", token=False),
    ("state",): AgentRoute("GET", "agent.state", token=True),
    ("bgp", "intent"): AgentRoute("PUT", "agent.intent", token=True),
}
OPS = frozenset(r.op for r in ROUTES.values())


class AgentEndpoints:
    """Every emulated agent of a world. `on_intent(ip)` runs under the world lock after an intent applied."""

    def __init__(self, world: World, gate: Gate, on_intent: Callable[[str], None]) -> None:
        self.world = world
        self._gate = gate
        self._on_intent = on_intent
        self._started = time.monotonic()

    async def answer(self, req: Request) -> tuple[str, Response]:
        """(operation name, answer) for a request below /agents/."""
        low = req.lower
        route = ROUTES.get(low[3:]) if len(low) >= 4 and low[2] == "v1" else None
        if route is None:
            return "unknown", agent_error(404, "Not Found")
        ip = req.segments[1]
        with self.world.lock:
            nva = self.world.find_nva(ip)
            token = nva.agent_token if nva is not None else None
        if nva is None:
            return route.op, agent_error(404, f"no emulated NVA at {ip}")
        if req.method != route.method:
            return route.op, agent_error(405, "Method Not Allowed")
        if route.token and (not token or req.bearer() != token):
            return route.op, agent_error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        early = await self._gate.enter(route.op, req.method, None, (ip,), arm=False)
        if isinstance(early, Response):
            return route.op, early
        # Only a malformed body applies to the agent; a substituted ARM body does not.
        return route.op, reshape(self._answer(route.op, req, ip, nva), early, substitute=False)

    def _answer(self, op: str, req: Request, ip: str, nva: Nva) -> Response:
        uptime = int((time.monotonic() - self._started) * 1000)
        if op == "agent.health":
            return json_response(200, agent.health())
        if op == "agent.state":
            with self.world.lock:
                return json_response(200, agent.state(self.world, nva, uptime))
        try:
            intent = agent.parse_intent(req.json_body())
        except agent.IntentError as exc:
            return agent_error(422, [{"loc": list(exc.loc), "msg": str(exc), "type": "value_error"}])
        except ValueError as exc:  # not JSON at all
            return agent_error(422, [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}])
        # One intent at a time, like the real agent's apply lock: nothing here awaits, and the
        # server answers every request on one event loop, so intents never interleave.
        with self.world.lock:
            try:
                applied = agent.apply_intent(self.world, nva, intent, uptime)
            except agent.Refused as exc:  # 403 outside the NVA's policy, 409 conflict: the real agent's bodies
                return json_response(exc.status, exc.body())
            self._on_intent(ip)  # under the world lock: the agent's own change, seen as such
            return json_response(200, applied)
