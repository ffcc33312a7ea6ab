"""A local stand-in for the Functions host (Core Tools cannot be installed here): demo and tests only.

Owns serving the app's HTTP routes on 127.0.0.1 through the *same function objects* the host
would index (aiohttp.web in a background thread, `emulator.app_thread`), firing the timer,
and pumping the fan-out queue (and its poison queue) from Azurite with the host's rules (host.json,
`reconciler.fanout.HostQueueRules`): base64 bodies, a failed message back on the queue after
visibilityTimeout, until maxDequeueCount, then `<queue>-poison`; an idle queue is polled with the
listener's back-off up to maxPollingInterval (`PollDelay`). Every async function runs on one
event loop in one thread, as a Functions worker does; the HTTP front shares that loop.
Routes like the host: by path *and* method, `/<host.json routePrefix>/<route template>`,
FUNCTION-level routes need the key (`x-functions-key` or `?code=`) when one is given; anything no
route takes is an empty 404. Unlike the host, literal path segments match case-sensitively here.
Must not be taken for the host: function keys are checked only if you give it one, there is no
scale-out, and it must not know what any function does (it reads only their bindings).

    python -m localenv.host            # serve function_app with the current environment
    python -m localenv.host --demo     # emulated Azure + Azurite + emulated agent, then serve
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import azure.functions as func
from aiohttp import web
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from emulator.app_thread import AppThread
from localenv import ROOT, eventgrid
from reconciler.fanout import HostQueueRules, poison_queue

log = logging.getLogger("localenv.host")
_INDEX: dict[int, dict[str, Any]] = {}


def functions(app: func.FunctionApp) -> dict[str, Any]:
    """The app's functions by name. `get_functions()` may run only once per app, so cache it."""
    key = id(app)
    if key not in _INDEX:
        _INDEX[key] = {str(f.get_function_name()): f for f in app.get_functions()}
    return _INDEX[key]


def bindings(fn: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(fn.get_function_json())["bindings"]
    return result


def trigger(fn: Any) -> dict[str, Any]:
    return next(b for b in bindings(fn) if b["direction"] == "IN" and b["type"].endswith("Trigger"))


def route_prefix(host_json: Path = ROOT / "host.json") -> str:
    """host.json's `extensions.http.routePrefix`: "api" when absent; an empty string removes the
    prefix (Microsoft Learn, "Azure Functions HTTP triggers and bindings overview", host.json settings)."""
    http = json.loads(host_json.read_text()).get("extensions", {}).get("http", {})
    return str(http.get("routePrefix", "api")).strip("/")


class PollDelay:
    """The queue listener's wait before its next poll, as the host computes it: 100 ms after a poll
    that found messages; after an empty one 100 ms plus 100 ms x 2^(n-1) x a random 0.8-1.2, growing
    with each empty poll until it reaches host.json's maxPollingInterval, then staying there.

    Source: azure-sdk-for-net, Microsoft.Azure.WebJobs.Extensions.Storage.Common/src/Timers/
    RandomizedExponentialBackoffStrategy.cs (minimum and delta QueuePollingIntervals.Minimum =
    100 ms, RandomizationFactor 0.2) and Listeners/QueueListener.cs (the maximum is
    QueuesOptions.MaxPollingInterval). So an idle queue is read about once per maxPollingInterval,
    and a message that becomes visible waits up to that long: the local host must not be faster
    than Azure here, or the event path's measured latency would be ours, not Azure's.
    """

    MINIMUM = 0.1
    RANDOMIZATION = 0.2

    def __init__(self, maximum_s: float, rng: random.Random | None = None) -> None:
        self.maximum = max(self.MINIMUM, maximum_s)
        self.current = self.MINIMUM
        self.exponent = 1
        self._rng = rng or random.Random()

    def next(self, *, found: bool) -> float:
        if found:
            self.current, self.exponent = self.MINIMUM, 1
        elif self.current != self.maximum:
            factor = self._rng.uniform(1 - self.RANDOMIZATION, 1 + self.RANDOMIZATION)
            backoff = self.MINIMUM + factor * 2 ** (self.exponent - 1) * self.MINIMUM
            if backoff < self.maximum:
                self.current, self.exponent = backoff, self.exponent + 1
            else:
                self.current = self.maximum
        return self.current


def queue_rules(host_json: Path = ROOT / "host.json") -> HostQueueRules:
    """host.json's queue rules, with the app-setting overrides the host honours."""
    return HostQueueRules.load(host_json, os.environ)


T = TypeVar("T")
# "The HTTP request length is limited to 100 MB (104,857,600 bytes)": Microsoft Learn, "Azure
# Functions HTTP trigger", Limits. Bigger bodies get aiohttp's 413.
MAX_REQUEST_BYTES = 104_857_600
ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")  # a route without `methods` takes these


class LocalHost:
    """Serve `app` on 127.0.0.1:`port` (0 = free port). `with LocalHost(app) as host: host.url`."""

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        port: int = 0,
        storage_connection: str | None = None,
        key: str | None = None,
        on_close: Callable[[], Awaitable[Any] | None] | None = None,
        queue_names: Mapping[str, str] | None = None,
    ) -> None:
        self.functions = functions(app)
        # Binding queue name -> queue actually used (tests give each run its own queues; the
        # bindings were fixed when the app was indexed).
        self.queue_names = dict(queue_names or {})
        self.storage_connection = storage_connection
        self.key = key
        self.rules = queue_rules()
        self.max_dequeue = self.rules.max_dequeue_count
        self._on_close = on_close
        self._server = AppThread(self._web_app(), port=port, name="functions-worker", shutdown_timeout=2.0)
        self._stop = threading.Event()
        self._pumps: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self._server.url

    def start(self, *, pump_queues: bool = False) -> LocalHost:
        self._server.start()
        if pump_queues:
            for name in self.of_kind("queueTrigger"):
                th = threading.Thread(target=self._pump_forever, args=(name,), name=f"queue:{name}", daemon=True)
                th.start()
                self._pumps.append(th)
        return self

    def close(self) -> None:
        self._stop.set()
        for th in self._pumps:
            th.join(timeout=10)
        self._server.stop()  # runs `on_close` on the worker loop once HTTP has stopped (_closing)

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _closing(self, app: web.Application) -> None:
        if self._on_close is None:
            return
        try:
            result = self._on_close()
            if result is not None:
                await result
        except Exception:  # closing goes on (the loop ends next); say what was left unclosed
            log.warning("on_close failed", exc_info=True)

    # ---- invoking functions ----------------------------------------------------------------

    def kind(self, name: str) -> str | None:
        """The trigger type of function `name` (`httpTrigger`, `queueTrigger`, ...); None: no such function."""
        fn = self.functions.get(name)
        return None if fn is None else str(trigger(fn)["type"])

    def of_kind(self, kind: str) -> list[str]:
        """The names of the functions whose trigger type is `kind`, in the app's order."""
        return [name for name in self.functions if self.kind(name) == kind]

    def run(self, value: Coroutine[Any, Any, T] | T) -> T:
        """Await `value` on the worker loop if it is a coroutine; return it otherwise. From any
        thread but the worker's own (its handlers await `ainvoke`)."""
        if not inspect.iscoroutine(value):
            return value  # type: ignore[return-value]
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs in this thread
            here = None
        if here is self._server.loop:
            value.close()
            raise RuntimeError("LocalHost.run() on the worker loop would wait for itself: await ainvoke instead")
        result: T = self._server.call(value, timeout=self.rules.function_timeout.total_seconds())
        return result

    def invoke(self, name: str, value: Any) -> Any:
        return self.run(self.ainvoke(name, value))

    async def ainvoke(self, name: str, value: Any) -> Any:
        """Call function `name` with its trigger's value, on the worker loop; host.json's
        functionTimeout bounds it (the host gives up on the invocation too)."""
        fn = self.functions[name]
        result = fn.get_user_function()(**{trigger(fn)["name"]: value})
        if inspect.isawaitable(result):
            return await asyncio.wait_for(result, self.rules.function_timeout.total_seconds())
        return result

    def fire_timer(self, name: str | None = None, *, past_due: bool = False) -> None:
        name = name or self.of_kind("timerTrigger")[0]
        self.invoke(name, TimerRequest(past_due=past_due))

    def queue(self, name: str) -> QueueClient:
        if self.storage_connection is None:
            raise RuntimeError("no storage connection: the local host cannot pump queues")
        q = QueueClient.from_connection_string(
            self.storage_connection,
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        with contextlib.suppress(Exception):  # already exists
            q.create_queue()
        return q

    def pump(self, name: str) -> int:
        """Deliver every visible message of function `name`'s queue once, with the host's rules.

        Success deletes the message; failure puts it back, visible again after host.json's
        visibilityTimeout (the host's interval between retries), or — at maxDequeueCount — moves it
        to `<queue>-poison`. While the function runs the message stays invisible (the host renews
        it; here it is hidden for the function timeout). Returns how many deliveries were made.
        """
        qname = self._queue_of(name)
        q = self.queue(qname)
        delivered = 0
        hold = int(self.rules.function_timeout.total_seconds())
        for m in q.receive_messages(messages_per_page=16, visibility_timeout=hold):
            delivered += 1
            count = m.dequeue_count or 1
            qm = QueueMessage(  # type: ignore[no-untyped-call]
                id=m.id, body=str(m.content).encode("utf-8"), dequeue_count=count, pop_receipt=m.pop_receipt
            )
            try:
                self.invoke(name, qm)
            except Exception as exc:
                log.warning("%s failed (dequeue_count=%s): %s", name, count, exc)
                if count >= self.max_dequeue:
                    self.queue(poison_queue(qname)).send_message(m.content)
                    q.delete_message(m)
                else:
                    retry_in = int(self.rules.visibility_timeout.total_seconds())
                    q.update_message(m, visibility_timeout=retry_in)
                continue
            q.delete_message(m)
        return delivered

    def drain(self, deadline_s: float = 60.0) -> int:
        """Pump every queue function until all their queues are empty, messages waiting out their
        visibility timeout included (or the deadline passes)."""
        names = self.of_kind("queueTrigger")
        end = time.monotonic() + deadline_s
        total = 0
        while time.monotonic() < end:
            n = sum(self.pump(name) for name in names)
            total += n
            if n == 0:
                if all(self._waiting(name) == 0 for name in names):
                    return total
                time.sleep(0.2)  # a failed message is invisible until its retry is due
        raise TimeoutError(f"queues not drained within {deadline_s} s")

    def _waiting(self, name: str) -> int:
        """Messages on function `name`'s queue, invisible ones included."""
        props = self.queue(self._queue_of(name)).get_queue_properties()
        return int(props.approximate_message_count or 0)

    def _queue_of(self, name: str) -> str:
        """The queue function `name` listens on: its binding's, unless `queue_names` renames it."""
        bound = str(trigger(self.functions[name])["queueName"])
        return self.queue_names.get(bound, bound)

    def _pump_forever(self, name: str) -> None:
        delay = PollDelay(self.rules.max_polling_interval.total_seconds())
        while not self._stop.is_set():
            try:
                got = self.pump(name)
            except Exception as exc:  # storage down: keep the host up, like the real listener
                log.warning("queue pump %s: %s", name, exc)
                got = 0
            self._stop.wait(delay.next(found=got > 0))

    # ---- HTTP ------------------------------------------------------------------------------

    def _web_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_logged, _no_route_is_an_empty_404])
        app.router.add_route("*", eventgrid.PATH, self._eventgrid)  # the host's Event Grid extension
        app.router.add_route("POST", "/admin/functions/{name}", self._admin)
        base = f"/{prefix}/" if (prefix := route_prefix()) else "/"
        for fn in self.functions.values():
            t = trigger(fn)
            if t["type"] != "httpTrigger":
                continue
            path = base + route_path(t.get("route") or fn.get_function_name())
            auth = str(t.get("authLevel", "FUNCTION")).upper()
            for method in (m.upper() for m in t.get("methods") or ALL_METHODS):
                app.router.add_route(method, path, self._http_handler(fn, auth))
        app.on_cleanup.append(self._closing)
        return app

    def _http_handler(self, fn: Any, auth: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            params = query_params(request)
            if auth != "ANONYMOUS" and self.key is not None:
                given = request.headers.get("x-functions-key") or params.get("code")
                if given != self.key:
                    return _json(401, {"error": {"code": "unauthorized", "message": "function key"}})
            req = func.HttpRequest(
                request.method,
                f"{self.url}{request.raw_path}",
                headers=dict(request.headers),
                params=params,
                route_params=route_values(request),
                body=await request.read(),
            )
            try:
                resp = await self.ainvoke(str(fn.get_function_name()), req)
            except Exception:
                log.exception("function %s raised", fn.get_function_name())
                return _json(500, {"error": {"code": "internal", "message": "function raised"}})
            headers = dict(resp.headers)
            if not any(k.lower() == "content-type" for k in headers) and resp.mimetype:
                # As the host does: the response's mimetype (and charset) become its Content-Type.
                headers["Content-Type"] = f"{resp.mimetype}; charset={resp.charset or 'utf-8'}"
            return _response(resp.status_code, resp.get_body(), headers)

        return handle

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        # Like the host's admin endpoint: fire a timer, or hand a queue function {"input": ...}.
        name = request.match_info["name"]
        kind = self.kind(name)
        if kind is None:
            return web.Response(status=404)
        body = await request.read()
        try:
            if kind == "timerTrigger":
                await self.ainvoke(name, TimerRequest(past_due=False))
            elif kind == "queueTrigger":
                data = json.loads(body or b"{}")
                text = str(data.get("input", "")).encode("utf-8")
                await self.ainvoke(name, QueueMessage(body=text, dequeue_count=1))  # type: ignore[no-untyped-call]
            else:
                return _json(400, {"error": {"code": "not_invokable", "message": kind}})
        except Exception as exc:
            log.exception("admin invoke of %s failed", name)
            return _json(500, {"error": {"code": "function_failed", "message": str(exc)[:300]}})
        return web.Response(status=202)

    async def _eventgrid(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, headers = await eventgrid.deliver(
            self, query_params(request), request.method, dict(request.headers), body
        )
        return _response(status, payload, headers)


def route_path(template: str) -> str:
    """A Functions route template as an aiohttp path: `runs/{pass_id}` stays, a constraint
    (`{id:int}`) is dropped (this shim never checked one), so each parameter is one path segment."""
    return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", template)


def route_values(request: web.Request) -> dict[str, str]:
    """Route parameters as the host gives them: percent-decoded, except an encoded `/` stays `%2F`
    (Kestrel decodes every escape in the path but %2F, dotnet/aspnetcore#30655, and routing decodes
    nothing more, aspnet/Mvc#6388). aiohttp matched one segment and decoded it whole, so a `/` in a
    value can only have been a `%2F`."""
    return {name: value.replace("/", "%2F") for name, value in request.match_info.items()}


def query_params(request: web.Request) -> dict[str, str]:
    """The query as the worker's `HttpRequest.params`: decoded, blanks kept, the last of a repeat."""
    return dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))


@web.middleware
async def _logged(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # One line per request, without the query: it may carry the function key (?code=).
    started = time.monotonic()
    resp = await handler(request)
    log.info("%s %s %s %.0f ms", request.method, request.path, resp.status, (time.monotonic() - started) * 1000)
    return resp


@web.middleware
async def _no_route_is_an_empty_404(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # The host routes by path *and* method: a request whose method no route of that path takes
    # matches no route at all, so it is a 404 with an empty body like any unknown path, and never
    # reaches the function (no 405 from the host: Azure/azure-functions-host#10098, and #11625 for
    # HEAD on a GET route; aiohttp adds no HEAD route of its own here: routes are added per method).
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return web.Response(status=404)


def _json(status: int, payload: Any) -> web.Response:
    return _response(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def _response(status: int, body: bytes, headers: Mapping[str, str]) -> web.Response:
    head = {k: v for k, v in headers.items() if k.lower() != "content-length"}  # aiohttp counts the body
    return web.Response(status=status, body=body, headers=head)


# ---- running it -------------------------------------------------------------------------------


def load_app() -> Any:
    """Import function_app as the host would (settings are checked at import)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("function_app")


@contextlib.contextmanager
def demo_environment() -> Iterator[dict[str, str]]:
    """The demo's emulated world: ARM emulator + Azurite + emulated agent, as app settings."""
    from emulator import ArmEmulator, World
    from localenv.azurite import Azurite
    from localenv.demo_world import TOKEN_SETTING, WORLD, demo_desired, demo_env
    from localenv.scenarios import NVA_IP

    world = World.load(WORLD)
    with ArmEmulator(world) as emu, Azurite() as az, tempfile.TemporaryDirectory(prefix="ars-host-") as tmp:
        state = Path(tmp) / "desired.json"
        state.write_text(demo_desired(emu).model_dump_json())
        yield {
            **demo_env(emu, az.connection_string),
            "ARS_DESIRED_STATE": str(state),
            TOKEN_SETTING: world.nva(NVA_IP).agent_token,
        }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localenv.host", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7071)
    p.add_argument("--key", help="require this function key (x-functions-key or ?code=) on FUNCTION routes")
    p.add_argument("--demo", action="store_true", help="start the emulated world first and point the app at it")
    args = p.parse_args(argv)
    # SIGTERM (kill, CI teardown) must unwind like Ctrl-C so Azurite and the emulator are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # SDK request logging drowns everything at INFO
    with contextlib.ExitStack() as stack:
        if args.demo:
            os.environ.update(stack.enter_context(demo_environment()))
        from reconciler.errors import ConfigurationError

        try:
            fa = load_app()
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)  # one line naming the setting, no traceback
            return 2
        conn = os.environ.get("ARS_STORAGE_CONNECTION") or os.environ.get("AzureWebJobsStorage")  # noqa: SIM112
        host = LocalHost(fa.app, port=args.port, storage_connection=conn, key=args.key, on_close=fa.WORKER.aclose)
        host.start(pump_queues=conn is not None)
        stack.callback(host.close)
        print(f"serving {', '.join(host.functions)} on {host.url}", flush=True)
        print(f"  curl -X POST {host.url}/api/reconcile -d '{{\"dry_run\": true}}'", flush=True)
        print(f"  curl {host.url}/api/drift", flush=True)
        print(f"  curl -X POST {host.url}/admin/functions/reconcile_timer", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
