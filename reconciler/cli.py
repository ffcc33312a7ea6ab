"""Operator CLI: `python -m reconciler validate|plan|apply|trace|status|schema`.

Owns argument parsing and the choice of human or JSON output (the text itself is `report_text`).
Calls the same service function as the Functions triggers. Exit codes: 0 no drift, 2 drift, 1 error.
Must not know the local stand-ins: the demo lives in `localenv.demo` and calls in here, never back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from reconciler import desired, storage
from reconciler.errors import ConfigurationError, ReconcilerError
from reconciler.http_api import json_default, records
from reconciler.report_text import inert, render_report, render_trace, table
from reconciler.settings import Settings, load_settings
from reconciler.trigger import Trigger

if TYPE_CHECKING:  # the pass and its adapters load only for the commands that run one
    from reconciler.ledger_state import DriftRecord
    from reconciler.service import PassReport
    from reconciler.trace import Trace

EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "desired-state.schema.json"


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args, out)
        return code
    except ReconcilerError as exc:
        # One clear message, no traceback: the operator needs what and where, not our stack.
        print(f"error: {inert(exc)}", file=err)
        return EXIT_ERROR


EPILOG = """\
exit codes: 0 no drift, 2 drift (apply: still present after fixing; trace: a hop is broken), 1 error.
settings: environment variables ARS_* (README "Settings"): ARM endpoint and credentials, storage
(ARS_STORAGE_CONNECTION: the ledger `status` and `apply` read and write), the agents' tokens and
TLS (ARS_AGENT_CA_BUNDLE, ARS_AGENT_CLIENT_CERT/KEY for mutual TLS), Teams.

Deployed as an Azure Functions app, the same passes also run on a timer, on ARM events (Event
Grid) and on an NVA agent's signed change report (POST /api/agent/changes); over HTTP:
POST /api/reconcile (202 + Location /api/runs/{pass_id} when longer than ARS_HTTP_WAIT),
GET /api/drift, /api/runs, /api/trace (?format=svg: the path picture), /api/status (the on-call
status page). Old ledger rows expire after ARS_RETENTION_DAYS (daily retention_timer).
The NVA side: python -m nva_agent --help. Everything: README.md.
"""
TARGET_HELP = "only this target (its `name` in the desired state)"
JSON_HELP = "print JSON instead of text"
FILE_HELP = "the desired-state file (YAML or JSON)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reconciler",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(required=True, metavar="command")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")

    v = command("validate", "check a desired-state file; nothing else runs")
    v.add_argument("file", help=FILE_HELP)
    v.add_argument("--json", action="store_true", help=JSON_HELP)
    v.set_defaults(func=_validate)

    pl = command("plan", "observe ARM and the agents, show drift and the steps apply would run; changes nothing")
    pl.add_argument("file", help=FILE_HELP)
    pl.add_argument("--target", help=TARGET_HELP)
    pl.add_argument("--json", action="store_true", help=JSON_HELP)
    pl.set_defaults(func=_plan)

    ap = command(
        "apply", "run one reconcile pass: fix what policy allows, verify, record it in the ledger and tell Teams"
    )
    ap.add_argument("file", help=FILE_HELP)
    ap.add_argument("--target", help=TARGET_HELP)
    ap.add_argument("--dry-run", action="store_true", help="plan and show, change nothing, write nothing")
    ap.add_argument("--json", action="store_true", help=JSON_HELP)
    ap.set_defaults(func=_apply)

    st = command("status", "open drift (with who changed it) and the last passes, from the ledger")
    st.add_argument("--target", help=TARGET_HELP)
    st.add_argument("--limit", type=int, default=10, help="how many passes to show (default: %(default)s)")
    st.add_argument("--json", action="store_true", help=JSON_HELP)
    st.set_defaults(func=_status)

    tr = command("trace", "the hop-by-hop path of internet traffic, with a verdict per hop; changes nothing")
    tr.add_argument("file", help=FILE_HELP)
    tr.add_argument("--target", help=TARGET_HELP)
    tr.add_argument("--prefix", help="trace this prefix (default: each of the target's prefixes)")
    tr.add_argument("--json", action="store_true", help=JSON_HELP)
    tr.set_defaults(func=_trace)

    sc = command("schema", "print (or --write) the desired-state JSON Schema")
    sc.add_argument("--write", action="store_true", help=f"write it to schemas/{SCHEMA_PATH.name}")
    sc.set_defaults(func=_schema)

    return p


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    state = desired.load(args.file)
    if args.json:
        json.dump({"file": args.file, "valid": True, "targets": [t.name for t in state.targets]}, out)
        out.write("\n")
    else:
        print(
            f"{args.file}: valid, {len(state.targets)} target(s): {', '.join(t.name for t in state.targets)}", file=out
        )
    return EXIT_OK


def _plan(args: argparse.Namespace, out: TextIO) -> int:
    state = desired.load(args.file)
    settings = load_settings()
    report = asyncio.run(
        _pass(settings, state, trigger=Trigger.CLI_PLAN, dry_run=True, only=args.target, storage=False)
    )
    _render(report.to_dict(), args.json, out)
    return int(report.exit_code)


def _apply(args: argparse.Namespace, out: TextIO) -> int:
    state = desired.load(args.file)
    settings = load_settings()
    report = asyncio.run(
        _pass(settings, state, trigger=Trigger.CLI, dry_run=args.dry_run, only=args.target, storage=not args.dry_run)
    )
    _render(report.to_dict(), args.json, out)
    return int(report.exit_code)


async def _pass(
    settings: Settings, state: desired.DesiredState, *, trigger: Trigger, dry_run: bool, only: str | None, storage: bool
) -> PassReport:
    from reconciler.composition import Runtime
    from reconciler.service import reconcile

    async with Runtime(settings, storage=storage) as rt:
        return await reconcile(rt.services, state, trigger=trigger, dry_run=dry_run, only=only)


def _trace(args: argparse.Namespace, out: TextIO) -> int:
    from reconciler.composition import Runtime
    from reconciler.service import trace_targets

    state = desired.load(args.file)
    settings = load_settings()

    async def run() -> list[Trace]:
        async with Runtime(settings, storage=False) as rt:
            return await trace_targets(rt.services, state, only=args.target, prefix=args.prefix)

    traces = asyncio.run(run())
    if args.json:
        json.dump({"traces": [t.to_dict() for t in traces]}, out, indent=2)
        out.write("\n")
    else:
        for t in traces:
            render_trace(t.to_dict(), out)
    return EXIT_OK if all(t.verdict.value == "ok" for t in traces) else EXIT_DRIFT


def _status(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings()

    async def read() -> dict[str, Any]:
        from reconciler.ledger import Ledger

        access = storage.from_settings(settings)
        try:
            async with Ledger(access, table_prefix=settings.table_prefix) as led:
                await led.ensure_tables()
                drifts = await led.open_drifts(target=args.target)
                passes = await led.passes(limit=args.limit, target=args.target)
        finally:
            await access.close()
        return {"open_drift": [_drift_row(d) for d in drifts], "passes": records(passes)}

    data = asyncio.run(read())
    if args.json:
        json.dump(data, out, indent=2, default=json_default)
        out.write("\n")
    else:
        table(
            out,
            "Open drift",
            data["open_drift"],
            ["target", "code", "subject", "occurrences", "first_seen", "last_outcome", "changed_by"],
        )
        table(out, "Last passes", data["passes"], ["started_at", "trigger", "duration_s", "counts", "errors"])
    return EXIT_DRIFT if data["open_drift"] else EXIT_OK


def _schema(args: argparse.Namespace, out: TextIO) -> int:
    text = desired.json_schema_text()
    if args.write:
        SCHEMA_PATH.write_text(text)
        print(f"wrote {SCHEMA_PATH.name}", file=out)
    else:
        out.write(text)
    return EXIT_OK


def _drift_row(rec: DriftRecord) -> dict[str, Any]:
    # "changed by" as the one line a human reads; the structured form stays in the HTTP API.
    (row,) = records([rec])
    row["changed_by"] = rec.changed_by.describe() if rec.changed_by is not None else ""
    return row


# ---- rendering --------------------------------------------------------------------------------


def _render(report: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(report, out, indent=2, default=json_default)
        out.write("\n")
        return
    render_report(report, out)


def run() -> None:
    try:
        code = main()
    except ConfigurationError as exc:
        print(f"error: {inert(exc)}", file=sys.stderr)
        code = EXIT_ERROR
    sys.exit(code)
