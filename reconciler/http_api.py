"""The HTTP surface's rules: request parsing and validation, status codes, JSON bodies and errors.

Owns what a valid request to /api/reconcile, /api/drift, /api/runs, /api/health, /api/trace and
/api/status looks like, and how every failure becomes `{"error": {"code", "message"}}` with a 4xx/5xx status and never a
traceback. Pure: plain values in, `ApiResponse` out; must not know azure.functions or storage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from ipaddress import IPv4Network
from typing import Any

from reconciler.errors import ConfigurationError, PermanentError, ReconcilerError, TransientError
from reconciler.ledger_state import DriftRecord, PassRecord

MAX_BODY = 16 * 1024  # a reconcile request is two fields; anything large is not one
SEVERITIES = ("critical", "warning", "info")
RUNS_DEFAULT, RUNS_MAX = 20, 100
_PASS_ID = re.compile(r"^[0-9a-f]{12}$")  # service.new_pass_id()
RETRY_AFTER_S = 10  # how soon a client should poll a running pass again
# The Functions host accepts the function key as `?code=`; it reaches the function too, so allow it.
_HOST_PARAMS = frozenset({"code"})
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def json_bytes(self) -> bytes:
        return json.dumps(self.body, default=json_default, sort_keys=False).encode("utf-8")


class ApiError(Exception):
    """A request we refuse, with the status and code the client sees."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> ApiResponse:
        return error(self.status, self.code, self.message, self.headers)


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, {"error": {"code": code, "message": message}}, dict(headers or {}))


def from_exception(exc: BaseException) -> ApiResponse:
    """Map any failure to a JSON error. Only ApiError speaks about the request; the rest is ours."""
    if isinstance(exc, ApiError):
        return exc.response()
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
    if isinstance(exc, ConfigurationError):
        return error(503, "misconfigured", f"the app's configuration is invalid: {first}")
    if isinstance(exc, TransientError):
        return error(503, "unavailable", f"a dependency is unavailable, retry later: {first}", {"Retry-After": "30"})
    if isinstance(exc, PermanentError):
        return error(502, "dependency_failed", first)
    if isinstance(exc, ReconcilerError):
        return error(500, "internal", first)
    # A bug: say so without leaking internals; the traceback goes to the log.
    return error(500, "internal", "internal error; see the function's logs")


# ---- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileRequest:
    dry_run: bool = False
    target: str | None = None


@dataclass(frozen=True)
class DriftQuery:
    target: str | None = None
    severity: str | None = None


@dataclass(frozen=True)
class RunsQuery:
    limit: int = RUNS_DEFAULT
    target: str | None = None


def parse_reconcile(body: bytes, params: Mapping[str, str], targets: Collection[str]) -> ReconcileRequest:
    """`{"dry_run": bool, "target": str}` from the JSON body and/or the query string; strict.

    No method check: the host routes by method, so a wrong one never reaches the function (it
    answers 404 itself); each route's `methods=[...]` in function_app.py is the one rule.
    """
    fields: dict[str, Any] = {}
    if body.strip():
        if len(body) > MAX_BODY:
            raise ApiError(413, "body_too_large", f"request body is over {MAX_BODY} bytes")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"request body is not valid JSON: {_json_reason(exc)}") from None
        except RecursionError:
            # json.loads recurses per nesting level: `[[[...` under MAX_BODY exceeds Python's limit.
            raise ApiError(400, "invalid_json", "request body is not valid JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", f"request body must be a JSON object, got {_json_type(data)}")
        _no_unknown(data, {"dry_run", "target"}, "body")
        if "dry_run" in data and not isinstance(data["dry_run"], bool):
            raise ApiError(400, "invalid_field", f"dry_run must be true or false, got {_json_type(data['dry_run'])}")
        if "target" in data and data["target"] is not None and not isinstance(data["target"], str):
            raise ApiError(400, "invalid_field", f"target must be a string, got {_json_type(data['target'])}")
        fields.update(data)
    query = _query(params, {"dry_run", "target"})
    if "dry_run" in query:
        _agree(fields, "dry_run", _bool(query["dry_run"], "dry_run"))
    if "target" in query:
        _agree(fields, "target", query["target"])
    target = fields.get("target")
    return ReconcileRequest(dry_run=bool(fields.get("dry_run", False)), target=_known(target, targets))


def parse_drift_query(params: Mapping[str, str], targets: Collection[str]) -> DriftQuery:
    query = _query(params, {"target", "severity"})
    severity = query.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise ApiError(400, "invalid_query", f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    return DriftQuery(target=_known(query.get("target"), targets), severity=severity)


def parse_runs_query(params: Mapping[str, str], targets: Collection[str]) -> RunsQuery:
    query = _query(params, {"limit", "target"})
    limit = RUNS_DEFAULT
    if "limit" in query:
        text = query["limit"]
        # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= RUNS_MAX:
            raise ApiError(400, "invalid_query", f"limit must be a whole number from 1 to {RUNS_MAX}, got {text!r}")
        limit = int(text)
    return RunsQuery(limit=limit, target=_known(query.get("target"), targets))


def parse_run(pass_id: str, params: Mapping[str, str]) -> str:
    """`GET /api/runs/{pass_id}`: the pass id (no query fields). 404 for anything not a pass id."""
    _query(params, set())
    if not _PASS_ID.match(pass_id):
        raise ApiError(404, "unknown_run", f"no run {pass_id[:40]!r}: a pass id is 12 hex digits")
    return pass_id


def parse_health(params: Mapping[str, str]) -> None:
    _query(params, set())


@dataclass(frozen=True)
class TraceQuery:
    target: str | None = None
    prefix: str | None = None
    svg: bool = False


def parse_trace_query(params: Mapping[str, str], targets: Collection[str]) -> TraceQuery:
    """GET /api/trace?target=&prefix=&format=json|svg (an SVG shows one target's path of one prefix)."""
    q = _query(params, {"target", "prefix", "format"})
    target = _known(q.get("target") or None, targets)
    prefix = q.get("prefix") or None
    if prefix is not None:
        try:
            IPv4Network(prefix, strict=False)
        except ValueError as exc:
            raise ApiError(400, "bad_prefix", f"prefix {prefix[:50]!r} is not an IPv4 prefix like 0.0.0.0/0") from exc
    fmt = q.get("format", "json")
    if fmt not in ("json", "svg"):
        raise ApiError(400, "bad_format", "format must be json or svg")
    if fmt == "svg" and target is None and len(targets) != 1:
        raise ApiError(400, "target_required", "an SVG shows one target: give target=")
    return TraceQuery(target, prefix, fmt == "svg")


def parse_status_query(params: Mapping[str, str], targets: Collection[str]) -> str | None:
    """GET /api/status?target= : the status page, for every target or one."""
    return _known(_query(params, {"target"}).get("target") or None, targets)


def _query(params: Mapping[str, str], allowed: set[str]) -> dict[str, str]:
    _no_unknown(params, allowed | _HOST_PARAMS, "query")
    return {k: v for k, v in params.items() if k in allowed}


def _no_unknown(data: Mapping[str, Any], allowed: Collection[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        known = ", ".join(sorted(a for a in allowed if a not in _HOST_PARAMS)) or "none"
        message = f"unknown {where} field(s): {', '.join(unknown)}; allowed: {known}"
        raise ApiError(400, f"unknown_{where}_field", message)


def _agree(fields: dict[str, Any], key: str, value: Any) -> None:
    if key in fields and fields[key] != value:
        raise ApiError(400, "conflicting_fields", f"{key} differs between the body and the query string")
    fields[key] = value


def _bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ApiError(400, "invalid_query", f"{name} must be true or false, got {text!r}")


def _known(target: str | None, targets: Collection[str]) -> str | None:
    if target is None:
        return None
    if target not in targets:
        raise ApiError(404, "unknown_target", f"unknown target {target[:100]!r}; known: {', '.join(sorted(targets))}")
    return target


def _json_reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "not UTF-8"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# ---- responses --------------------------------------------------------------------------------


def reconcile_response(report: Mapping[str, Any], target: str | None) -> ApiResponse:
    """200 with the pass report; 409 (same body) when the asked target — or, without one, every
    target — was locked by another pass, so a client can tell "nothing was done" apart."""
    statuses = [t["status"] for t in report.get("targets", [])]
    locked = bool(statuses) and all(s == "locked" for s in statuses)
    if target is not None:
        locked = "locked" in statuses
    return ApiResponse(409 if locked else 200, dict(report))


def run_location(pass_id: str) -> str:
    return f"/api/runs/{pass_id}"


def run_accepted(run: Mapping[str, Any]) -> ApiResponse:
    """202 for a pass still running: where to poll, and when (the async request-reply pattern)."""
    location = run_location(run["pass_id"])
    body = {k: run[k] for k in ("pass_id", "status", "requested_at", "dry_run", "target")}
    body["status_url"] = location
    return ApiResponse(202, body, {"Location": location, "Retry-After": str(RETRY_AFTER_S)})


def run_response(pass_id: str, run: Mapping[str, Any] | None) -> ApiResponse:
    """A poll of `/api/runs/{pass_id}`: 202 while running; once done, what the POST would have
    answered (200, or 409 when locked) with the pass report; 404 when there is no such run."""
    if run is None:
        raise ApiError(404, "unknown_run", f"no run {pass_id!r} (runs are kept for HTTP-requested passes)")
    if run["status"] != "done":
        return run_accepted(run)
    return ApiResponse(int(run["http_status"]), dict(run["report"]))


def records(items: Iterable[DriftRecord | PassRecord]) -> list[dict[str, Any]]:
    """Ledger values as JSON-ready dicts: the shape of /api/drift, /api/runs and `status --json`."""
    return [asdict(item) for item in items]


def health(
    targets: Sequence[str],
    passes: Iterable[Any],
    *,
    now: datetime,
    interval: timedelta,
    schedule: str,
    fanout: bool,
) -> ApiResponse:
    """Last successful pass per target and how stale it is against the timer schedule.

    A pass is a success for a target when it ran for real (not a dry run) and recorded no error
    against that target other than the alert step's. A target is stale when that is older than two
    ticks plus a minute (one missed tick is tolerated: a cold start or a slow pass). 503 when any
    target is stale, so an availability probe can alert on it. "degraded" (200) when the newest
    pass of a target recorded alert-step problems (a card that could not be built or was
    dead-lettered, the outbox unreachable): drift is watched, but on-call may not hear of it.
    Names targets and pass ids: behind the function key (`/api/health/details`); the anonymous
    route answers `health_summary` of it.
    """
    stale_after = 2 * interval + timedelta(seconds=60)
    last: dict[str, Any] = {}
    alerting: dict[str, list[str]] = {}  # target → the alert-step problems of its newest pass
    for p in passes:  # newest first
        if p.dry_run:
            continue
        for t in p.targets:
            if t not in targets:
                continue
            mine = [str(e) for e in p.errors if str(e).startswith(f"{t}/")]
            alerting.setdefault(t, [e for e in mine if e.startswith(f"{t}/alerts:")])
            if t not in last and not any(not e.startswith(f"{t}/alerts:") for e in mine):
                last[t] = p
    rows = []
    for t in targets:
        p = last.get(t)
        age = None if p is None else max(0.0, (now - p.started_at).total_seconds())
        rows.append(
            {
                "target": t,
                "last_success": None if p is None else p.started_at,
                "last_pass_id": None if p is None else p.pass_id,
                "trigger": None if p is None else p.trigger,
                "age_s": None if age is None else round(age, 1),
                "stale": age is None or age > stale_after.total_seconds(),
                "alert_problems": alerting.get(t, [])[:5],
            }
        )
    stale = [r["target"] for r in rows if r["stale"]]
    degraded = [r["target"] for r in rows if r["alert_problems"]]
    body = {
        "status": "stale" if stale else "degraded" if degraded else "ok",
        "checked_at": now,
        "schedule": schedule,
        "interval_s": interval.total_seconds(),
        "stale_after_s": stale_after.total_seconds(),
        "fanout": fanout,
        "stale_targets": stale,
        "alerts_degraded_targets": degraded,
        "targets": rows,
    }
    return ApiResponse(503 if stale else 200, body)


# What anonymous /api/health may say: the verdict and how stale, nothing that names the fleet,
# its passes, files or storage (those are in the keyed details).
SUMMARY_KEYS = ("status", "checked_at", "stale_after_s", "max_age_s")


def health_summary(details: ApiResponse) -> ApiResponse:
    """The anonymous view of `health(...)`: same status code, status and staleness only.
    `max_age_s` is the age of the stalest target's last success (null: one never succeeded)."""
    body = details.body
    ages = [r["age_s"] for r in body["targets"]]
    max_age = None if not ages or None in ages else max(ages)
    summary = {"status": body["status"], "checked_at": body["checked_at"], "stale_after_s": body["stale_after_s"],
               "max_age_s": max_age}
    return ApiResponse(details.status, {k: summary[k] for k in SUMMARY_KEYS})


def health_unknown() -> ApiResponse:
    """Anonymous /api/health when the verdict cannot be computed: say so without the reason (it
    may name the desired-state file or the storage host); the reason is in the log and the details."""
    return error(503, "unavailable", "health cannot be determined now; /api/health/details (function key) says why")


def json_default(value: Any) -> Any:
    """The one JSON form of our values (times in ISO 8601, enums by value), for the HTTP API and the
    CLI's --json alike."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)
