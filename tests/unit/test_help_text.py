"""A user who reads only `--help` finds every capability: the CLI's and the agent's help name them."""

from __future__ import annotations

import pytest

import nva_agent.__main__ as agent_main
from reconciler import cli

RECONCILER_CAPABILITIES = (
    "trace", "status", "/api/status", "/api/trace", "format=svg", "Event", "/api/agent/changes",
    "/api/runs/{pass_id}", "ARS_HTTP_WAIT", "ARS_RETENTION_DAYS", "mutual TLS", "nva_agent --help",
)  # fmt: skip
AGENT_CAPABILITIES = (
    "NVA_AGENT_POLICY_FILE", "NVA_AGENT_TOKEN_FILE", "rotating", "NVA_AGENT_TLS_CLIENT_CA", "mutual TLS",
    "NVA_AGENT_REPORT_URL", "NVA_AGENT_REPORT_IP", "SIGHUP", "--lab",
)  # fmt: skip


def test_the_reconciler_help_names_every_capability() -> None:
    text = cli._parser().format_help()
    assert [c for c in RECONCILER_CAPABILITIES if c not in text] == []


def test_every_reconciler_command_and_option_has_help() -> None:
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, (name, action.dest)


def test_the_agent_help_names_every_capability(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        agent_main.main(["--help"])
    text = capsys.readouterr().out
    assert [c for c in AGENT_CAPABILITIES if c not in text] == []
