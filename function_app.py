"""The Azure Functions app (Python v2 model): thin triggers over the same service as the CLI.

Owns the bindings (timer, HTTP routes, fan-out queue and its poison queue) and nothing else:
each function parses its trigger, calls `reconciler.service.reconcile` or the ledger through the
worker's one `Runtime`, and maps the result. It must not hold rules of its own: request rules
live in `reconciler.http_api`, the queue message in `reconciler.fanout`, clients in
`reconciler.composition`.

Settings are read and checked at import, which is when the host indexes the app: a missing or
malformed setting stops the app with one line naming it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func

from reconciler import http_api, retention, runs, status_page, storage
from reconciler.attribution import latest
from reconciler.composition import Runtime, Worker, settle_heap
from reconciler.desired import DesiredState
from reconciler.errors import ReconcilerError, TransientError
from reconciler.event_intake import EventIntake, change_report_answer, envelope
from reconciler.fanout import BadMessage, FanoutMessage, HostQueueRules, parse_message, poison_queue
from reconciler.picture import trace_svg
from reconciler.runs import Run, RunStatus
from reconciler.schedule import parse as parse_schedule
from reconciler.service import PassReport, TargetStatus, new_pass_id, reconcile, trace_targets
from reconciler.trigger import Trigger

log = logging.getLogger("reconciler.functions")
# The Python worker forwards every record at INFO and up, and the Azure SDKs log each HTTP request
# and response at INFO (azure.core's HttpLoggingPolicy): 60 of 65 records of one queue pass. Their
# warnings and errors still pass. host.json's logLevel cannot tell them apart: the worker sends
# all of a function's records under one category (Function.<name>.User).
logging.getLogger("azure").setLevel(logging.WARNING)
APP_ROOT = Path(__file__).resolve().parent

WORKER = Worker.from_environment(APP_ROOT)
# An invalid desired-state document also stops the app at start. A missing agent token does not:
# that peer is reported blind on every pass (and alerted), while the rest of the fleet is guarded.
for _name in WORKER.missing_secrets(WORKER.check_desired()):
    log.warning("setting %s is not set: the agent that names it cannot be reached", _name)
SETTINGS = WORKER.settings
for _name in SETTINGS.ignored_proxy_variables:
    log.warning("%s is set but not read: set ARS_HTTPS_PROXY to send ARM and Storage calls through a proxy", _name)

if SETTINGS.applicationinsights_connection_string is not None:
    # Imported only when used: the distro is heavy and instruments libraries as it loads.
    from azure.monitor.opentelemetry import configure_azure_monitor

    from reconciler.telemetry import RedactingSpanProcessor

    # Before the exporter: no webhook, heartbeat or query secret leaves in a span (reconciler.telemetry).
    configure_azure_monitor(logger_name="reconciler", span_processors=[RedactingSpanProcessor()])

# How the host retries a fan-out message (host.json, with the app-setting overrides the host honours).
QUEUE_RULES = HostQueueRules.load(APP_ROOT / "host.json", SETTINGS.app_settings)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
# Event Grid intake: seen event IDs and pending markers (reconciler.event_intake).
EVENTS = EventIntake(SETTINGS, message_ttl_s=QUEUE_RULES.message_ttl(timedelta(0)))
# Start-up is done: the SDKs' import-time heap is frozen out of every later collection (issue #18).
settle_heap()


# ---- timer ------------------------------------------------------------------------------------


@app.function_name("reconcile_timer")
@app.timer_trigger(arg_name="timer", schedule=SETTINGS.timer_schedule, run_on_startup=False, use_monitor=True)
async def reconcile_timer(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("timer is past due: the previous tick was missed or ran long")
    state = WORKER.desired()
    rt = await WORKER.runtime()
    if WORKER.fanout is not None:
        now = datetime.now(UTC)
        # One tick is not enough: a failing try takes up to the function timeout plus the visibility
        # timeout, and a message that expires before its last try never reaches the poison queue.
        ttl = QUEUE_RULES.message_ttl(parse_schedule(SETTINGS.timer_schedule).interval(now))
        sent = await WORKER.fanout.enqueue((FanoutMessage(t.name, now) for t in state.targets), ttl)
        log.info("fan-out: enqueued %d target(s) on %s", sent, SETTINGS.fanout_queue)
        return
    _log_report(await reconcile(rt.services, state, trigger=Trigger.TIMER))


@app.function_name("retention_timer")
@app.timer_trigger(arg_name="timer", schedule=retention.SCHEDULE, run_on_startup=False, use_monitor=True)
async def retention_timer(timer: func.TimerRequest) -> None:
    policy = retention.RetentionPolicy(days=SETTINGS.retention_days)
    rt = await WORKER.runtime()
    now = datetime.now(UTC)
    async with retention.Retention(rt.access, SETTINGS.table_prefix, policy) as purge:
        await purge.purge(now)
    gone = await WORKER.runs.purge(now - runs.RUN_KEEP)  # HTTP run records (reconciler.runs)
    log.info("retention: %d HTTP run record(s) older than %s deleted", gone, runs.RUN_KEEP)


# ---- fan-out queue ----------------------------------------------------------------------------


@app.function_name("reconcile_queue")
@app.queue_trigger(arg_name="msg", queue_name=SETTINGS.fanout_queue, connection=storage.SETTING)
async def reconcile_queue(msg: func.QueueMessage) -> None:
    rt = await WORKER.runtime()
    try:
        message = parse_message(msg.get_body())
        state = WORKER.desired()
        if message.target is not None and message.target not in {t.name for t in state.targets}:
            raise BadMessage(f"target {message.target!r} is no longer in the desired state")
    except BadMessage as exc:
        # Retrying cannot fix it: record it as poison now rather than after maxDequeueCount tries.
        await _poison(rt, msg, str(exc))
        return
    if message.run is not None:
        # The fallback of an HTTP run came due: finish the run unless its worker did.
        run = await WORKER.runs.unfinished(message.run)
        if run is not None:
            await _carry(state, run, None)
        return
    # An event pass takes who made the change(s) that asked for it, for the ledger and the cards.
    event = message.origin is Trigger.EVENT and message.target is not None
    who = latest(await EVENTS.claim(message.target)) if event and message.target else None
    report = await reconcile(
        rt.services,
        state,
        trigger=Trigger.EVENT if message.origin is Trigger.EVENT else Trigger.QUEUE,
        only=message.target,
        changed_by={message.target: who} if who is not None and message.target is not None else None,
    )
    _log_report(report)
    failed = [t for t in report.targets if t.status is TargetStatus.ERROR]
    if failed:
        # Raising hands the message back to the host, which retries it and, after
        # maxDequeueCount (host.json), moves it to the poison queue.
        raise TransientError(f"target {message.target!r}: {failed[0].errors[0][1] if failed[0].errors else 'error'}")


@app.function_name("reconcile_poison")
@app.queue_trigger(arg_name="msg", queue_name=poison_queue(SETTINGS.fanout_queue), connection=storage.SETTING)
async def reconcile_poison(msg: func.QueueMessage) -> None:
    rt = await WORKER.runtime()
    # The host moved it here after its last try; this delivery's own dequeue_count starts again at 1
    # on the poison queue, so the number of tries is the host's maxDequeueCount.
    tries = QUEUE_RULES.max_dequeue_count
    await _poison(rt, msg, f"failed {tries} time(s) (maxDequeueCount); moved to the poison queue by the host")


async def _poison(rt: Runtime, msg: func.QueueMessage, reason: str) -> None:
    body = msg.get_body().decode("utf-8", "replace")
    try:
        message: FanoutMessage | None = parse_message(msg.get_body())
    except BadMessage:
        message = None
    target = message.target if message is not None else None
    # Error level: this is what an App Insights alert rule keys on, Teams or not.
    log.error("fan-out poison message (target=%s): %s", target or "?", reason, extra={"target": target or ""})
    now = datetime.now(UTC)
    await rt.ledger.record_poison(body, reason, now)
    alerts = rt.services.alerts
    if alerts is not None and target is not None and target in {t.name for t in WORKER.desired().targets}:
        # A target whose pass keeps failing is one the reconciler cannot see: "reconciler blind",
        # at once (its tries already took minutes; no hold-down applies).
        await alerts.poisoned(target, reason, now)
    if message is not None and message.run is not None:
        await WORKER.runs.give_up(message.run, reason)


# ---- Event Grid (ARM events of the watched subscriptions; infra/events.bicep) -----------------


@app.function_name("reconcile_event")
@app.event_grid_trigger(arg_name="event")
async def reconcile_event(event: func.EventGridEvent) -> None:
    # Screen the event and queue a targeted pass per affected target (reconciler.event_intake);
    # the pass runs on the fan-out queue worker, under the same lease, plan and budget as the timer.
    await EVENTS.handle(envelope(event), WORKER.desired())


@app.function_name("agent_report_http")
@app.route(route="agent/changes", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def agent_report_http(req: func.HttpRequest) -> func.HttpResponse:
    # An NVA agent saw FRR change (reconciler.change_report: HMAC, timestamp, nonce): queue a pass.
    try:
        outcome = await EVENTS.handle_report(dict(req.headers), req.get_body(), WORKER.desired())
        return _http(http_api.ApiResponse(*change_report_answer(outcome)))
    except Exception as exc:
        return _failed("agent/changes", exc)


# ---- HTTP -------------------------------------------------------------------------------------


# An HTTP-requested pass that outlives its request runs on as a task of the worker's loop; the loop
# holds tasks weakly, so they are kept here until done.
_RUNS: set[asyncio.Task[PassReport]] = set()


@app.function_name("reconcile_http")
@app.route(route="reconcile", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def reconcile_http(req: func.HttpRequest) -> func.HttpResponse:
    """The pass report when the pass ends within ARS_HTTP_WAIT; else 202 + Location: /api/runs/{id}
    and the pass goes on (reconciler.runs: Azure cuts HTTP responses at 230 s)."""
    try:
        state = WORKER.desired()
        ask = http_api.parse_reconcile(req.get_body(), req.params, [t.name for t in state.targets])
        await WORKER.runtime()
        now = datetime.now(UTC)
        run = Run(new_pass_id(), RunStatus.RUNNING, now, ask.dry_run, ask.target)
        await WORKER.runs.put(run)
        # If this worker goes away mid-pass (scale-in, a crash), the queue worker carries the run on
        # when this message becomes visible: after any pass this worker could still be running.
        fallback = FanoutMessage(ask.target, now, origin=Trigger.HTTP, run=run.pass_id, dry_run=ask.dry_run)
        delay = QUEUE_RULES.function_timeout + QUEUE_RULES.visibility_timeout
        ttl = int((delay + QUEUE_RULES.retry_budget()).total_seconds())
        receipt = await WORKER.queue.send_later(fallback, int(delay.total_seconds()), ttl)
        task = asyncio.create_task(_carry(state, run, receipt), name=f"run:{run.pass_id}")
        _RUNS.add(task)
        task.add_done_callback(_RUNS.discard)
        done, _ = await asyncio.wait({task}, timeout=SETTINGS.http_wait)
        if task in done:
            return _http(http_api.reconcile_response(task.result().to_dict(), ask.target))
        log.info("pass %s goes on after the request: 202", run.pass_id, extra={"pass_id": run.pass_id})
        return _http(http_api.run_accepted(run.to_dict()))
    except Exception as exc:
        return _failed("reconcile", exc)


def _carry(state: DesiredState, run: Run, receipt: tuple[str, str] | None) -> Coroutine[Any, Any, PassReport]:
    """The HTTP-requested pass, carried to its end and recorded (reconciler.runs.carry)."""
    timeout = QUEUE_RULES.function_timeout.total_seconds()
    return runs.carry(WORKER.runs, WORKER.queue, run, receipt, _http_pass(state, run), timeout_s=timeout)


async def _http_pass(state: DesiredState, run: Run) -> PassReport:
    rt = await WORKER.runtime()
    report = await reconcile(
        rt.services, state, trigger=Trigger.HTTP, dry_run=run.dry_run, only=run.target, pass_id=run.pass_id
    )
    _log_report(report)
    return report


@app.function_name("run_http")
@app.route(route="runs/{pass_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def run_http(req: func.HttpRequest) -> func.HttpResponse:
    """Poll an HTTP-requested pass: 202 while it runs, then its report (200, or 409 when locked)."""
    try:
        pass_id = http_api.parse_run(req.route_params.get("pass_id", ""), req.params)
        await WORKER.runtime()
        run = await WORKER.runs.get(pass_id)
        return _http(http_api.run_response(pass_id, None if run is None else run.to_dict()))
    except Exception as exc:
        return _failed("runs", exc)


@app.function_name("drift_http")
@app.route(route="drift", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def drift_http(req: func.HttpRequest) -> func.HttpResponse:
    try:
        q = http_api.parse_drift_query(req.params, [t.name for t in WORKER.desired().targets])
        rt = await WORKER.runtime()
        drifts = await rt.ledger.open_drifts(target=q.target, severity=q.severity)
        return _http(http_api.ApiResponse(200, {"count": len(drifts), "drifts": http_api.records(drifts)}))
    except Exception as exc:
        return _failed("drift", exc)


@app.function_name("runs_http")
@app.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def runs_http(req: func.HttpRequest) -> func.HttpResponse:
    try:
        q = http_api.parse_runs_query(req.params, [t.name for t in WORKER.desired().targets])
        rt = await WORKER.runtime()
        passes = await rt.ledger.passes(limit=q.limit, target=q.target)
        return _http(http_api.ApiResponse(200, {"count": len(passes), "runs": http_api.records(passes)}))
    except Exception as exc:
        return _failed("runs", exc)


@app.function_name("health_http")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health_http(req: func.HttpRequest) -> func.HttpResponse:
    """Anonymous, for availability probes: status and staleness only (see http_api.health_summary)."""
    try:
        http_api.parse_health(req.params)
    except http_api.ApiError as exc:
        return _http(exc.response())
    try:
        return _http(http_api.health_summary(await _health()))
    except Exception as exc:
        log.error("health: %s", exc, exc_info=not isinstance(exc, ReconcilerError))
        return _http(http_api.health_unknown())


@app.function_name("health_details_http")
@app.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health_details_http(req: func.HttpRequest) -> func.HttpResponse:
    """Per target: last successful pass, its id, trigger and age; the schedule and fan-out mode."""
    try:
        http_api.parse_health(req.params)
        return _http(await _health())
    except Exception as exc:
        return _failed("health", exc)


async def _health() -> http_api.ApiResponse:
    targets = [t.name for t in WORKER.desired().targets]
    rt = await WORKER.runtime()
    now = datetime.now(UTC)
    # With fan-out every target has its own pass per tick: read enough to reach each one's last.
    passes = await rt.ledger.passes(limit=min(1000, 3 * len(targets) + 20))
    return http_api.health(
        targets,
        passes,
        now=now,
        interval=parse_schedule(SETTINGS.timer_schedule).interval(now),
        schedule=SETTINGS.timer_schedule,
        fanout=SETTINGS.fanout,
    )


@app.function_name("trace_http")
@app.route(route="trace", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def trace_http(req: func.HttpRequest) -> func.HttpResponse:
    """The hop-by-hop path (reconciler.trace) from a fresh read-only observation: JSON, or format=svg."""
    try:
        state = WORKER.desired()
        names = [t.name for t in state.targets]
        q = http_api.parse_trace_query(req.params, names)
        rt = await WORKER.runtime()
        only = q.target or (names[0] if q.svg else None)
        traces = await trace_targets(rt.services, state, only=only, prefix=q.prefix)
        if q.svg:
            svg = trace_svg(traces[0])
            return func.HttpResponse(svg, headers=status_page.SECURITY_HEADERS, mimetype="image/svg+xml")
        return _http(http_api.ApiResponse(200, {"traces": [t.to_dict() for t in traces]}))
    except Exception as exc:
        return _failed("trace", exc)


@app.function_name("status_http")
@app.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def status_http(req: func.HttpRequest) -> func.HttpResponse:
    """The on-call status page (reconciler.status_page): paths, open drift with cause, passes, timeline."""
    try:
        state = WORKER.desired()
        target = http_api.parse_status_query(req.params, [t.name for t in state.targets])
        rt = await WORKER.runtime()
        data = await status_page.gather(rt.services, rt.ledger, state, now=datetime.now(UTC), target=target)
        return func.HttpResponse(status_page.render(data), headers=status_page.SECURITY_HEADERS, mimetype="text/html")
    except Exception as exc:
        return _failed("status", exc)


@app.function_name("static_http")
@app.route(route="static/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def static_http(req: func.HttpRequest) -> func.HttpResponse:
    """The status page's stylesheet: a fixed list of files, nothing secret, so no key."""
    found = status_page.static_file(req.route_params.get("name", ""))
    if found is None:
        return _http(http_api.error(404, "not_found", "no such static file"))
    body, mimetype = found
    return func.HttpResponse(body, mimetype=mimetype, headers={"X-Content-Type-Options": "nosniff"})


def _http(resp: http_api.ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(
        resp.json_bytes(), status_code=resp.status, headers=dict(resp.headers), mimetype="application/json"
    )


def _failed(route: str, exc: Exception) -> func.HttpResponse:
    resp = http_api.from_exception(exc)
    if resp.status >= 500:
        # Ours, not the caller's: keep the traceback in the log, out of the response.
        log.error("%s: %s", route, exc, exc_info=not isinstance(exc, ReconcilerError))
    return _http(resp)


def _log_report(report: PassReport) -> None:
    for t in report.targets:
        log.info(
            "pass %s (%s%s) target=%s status=%s drifts=%d remaining=%d steps=%d",
            report.pass_id,
            report.trigger,
            ", dry run" if report.dry_run else "",
            t.target,
            t.status,
            len(t.drifts),
            len(t.remaining),
            len(t.outcomes),
            extra={"pass_id": report.pass_id, "target": t.target, "trigger": report.trigger.value},
        )
    for stage, message in report.errors:
        log.error("pass %s: %s: %s", report.pass_id, stage, message, extra={"pass_id": report.pass_id})
