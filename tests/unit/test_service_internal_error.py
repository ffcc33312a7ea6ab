"""A bug in one target's pass is that target's recorded `internal` error, never the pass's end:
raised while observing (the alert step still runs under the lease and sees it) or in the alert step."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from reconciler.desired import Peer, Target
from reconciler.observed import Observation
from reconciler.service import PassReport, Services, TargetReport, TargetStatus, reconcile_target
from tests.unit import factories


class BrokenArm:
    async def observe(self, target: Target) -> Observation:
        raise KeyError("properties")  # a bug, not a read that failed

    async def put_connection(self, target: Target, name: str, peer_ip: str, peer_asn: int) -> None: ...
    async def enable_branch_to_branch(self, target: Target) -> None: ...


class NoAgents:
    def for_peer(self, target: Target, peer: Peer) -> str:
        return "no agent"


class Alerts:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.seen: list[tuple[TargetStatus, list[tuple[str, str]]]] = []

    async def after_target(
        self, target: Target, report: TargetReport, pass_id: str, now: datetime
    ) -> Mapping[str, object]:
        self.seen.append((report.status, list(report.errors)))
        if self.broken:
            raise RuntimeError("card template")
        return {}

    async def after_pass(self, report: PassReport, now: datetime) -> Mapping[str, object]:
        return {}

    async def poisoned(self, target: str, reason: str, now: datetime) -> Mapping[str, object]:
        return {}


def services(alerts: Alerts) -> Services:
    return Services(arm=BrokenArm(), agents=NoAgents(), alerts=alerts, clock=lambda: datetime(2026, 12, 1, tzinfo=UTC))


async def test_a_bug_while_observing_is_an_internal_error_the_alert_step_sees() -> None:
    alerts = Alerts()
    rep = await reconcile_target(services(alerts), factories.target(), dry_run=False, pass_id="p1")
    assert rep.status is TargetStatus.ERROR
    assert rep.errors == [("internal", "KeyError: 'properties'")]
    assert alerts.seen == [(TargetStatus.ERROR, [("internal", "KeyError: 'properties'")])]


async def test_a_bug_in_the_alert_step_is_an_internal_error_of_the_target() -> None:
    rep = await reconcile_target(services(Alerts(broken=True)), factories.target(), dry_run=False, pass_id="p1")
    assert rep.status is TargetStatus.ERROR
    assert rep.errors[-1] == ("internal", "RuntimeError: card template")
