"""Drift values: the stable catalogue of codes, their severity and who may fix them.

Owns the `Drift` value and its identity. Must not know how drift is detected, stored or alerted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class DriftCode(StrEnum):
    ROUTE_SERVER_UNHEALTHY = "ROUTE_SERVER_UNHEALTHY"
    BRANCH_TO_BRANCH_DISABLED = "BRANCH_TO_BRANCH_DISABLED"
    PEER_MISSING = "PEER_MISSING"
    PEER_MISMATCH = "PEER_MISMATCH"
    PEER_FAILED = "PEER_FAILED"
    PEER_UNEXPECTED = "PEER_UNEXPECTED"
    PEER_DOWN = "PEER_DOWN"
    ROUTE_MISSING = "ROUTE_MISSING"
    ROUTE_NEXT_HOP_WRONG = "ROUTE_NEXT_HOP_WRONG"
    ROUTE_REJECTED_LOOP = "ROUTE_REJECTED_LOOP"
    ROUTE_UNEXPECTED = "ROUTE_UNEXPECTED"
    ROUTE_LIMIT_RISK = "ROUTE_LIMIT_RISK"
    GATEWAY_NOT_LEARNING = "GATEWAY_NOT_LEARNING"
    GATEWAY_NOT_ADVERTISING = "GATEWAY_NOT_ADVERTISING"
    GATEWAY_NOT_ACTIVE_ACTIVE = "GATEWAY_NOT_ACTIVE_ACTIVE"
    FIREWALL_UNHEALTHY = "FIREWALL_UNHEALTHY"
    UDR_INVARIANT_BROKEN = "UDR_INVARIANT_BROKEN"
    NIC_ROUTE_WRONG = "NIC_ROUTE_WRONG"
    NIC_ROUTE_MISMATCH = "NIC_ROUTE_MISMATCH"
    OBSERVATION_FAILED = "OBSERVATION_FAILED"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Fixer(StrEnum):
    """Who may remove a drift (DESIGN §5)."""

    HUMAN = "human"
    AZURE_WRITE = "azure_write"  # only when the target's policy opts in
    NVA_AGENT = "nva_agent"
    NOBODY = "nobody"  # unknown state: nothing can be fixed from it


# Severity reflects what on-premises users feel: critical = internet traffic bypasses the
# firewall or is black-holed now; warning = the design is degraded but still carries traffic.
SEVERITY: dict[DriftCode, Severity] = {
    DriftCode.ROUTE_SERVER_UNHEALTHY: Severity.CRITICAL,
    DriftCode.BRANCH_TO_BRANCH_DISABLED: Severity.CRITICAL,
    DriftCode.PEER_MISSING: Severity.CRITICAL,
    DriftCode.PEER_MISMATCH: Severity.CRITICAL,
    DriftCode.PEER_FAILED: Severity.CRITICAL,
    DriftCode.PEER_UNEXPECTED: Severity.WARNING,
    DriftCode.PEER_DOWN: Severity.CRITICAL,
    DriftCode.ROUTE_MISSING: Severity.CRITICAL,
    DriftCode.ROUTE_NEXT_HOP_WRONG: Severity.CRITICAL,
    DriftCode.ROUTE_REJECTED_LOOP: Severity.WARNING,
    DriftCode.ROUTE_UNEXPECTED: Severity.WARNING,
    DriftCode.ROUTE_LIMIT_RISK: Severity.WARNING,
    DriftCode.GATEWAY_NOT_LEARNING: Severity.CRITICAL,
    DriftCode.GATEWAY_NOT_ADVERTISING: Severity.CRITICAL,
    DriftCode.GATEWAY_NOT_ACTIVE_ACTIVE: Severity.WARNING,
    DriftCode.FIREWALL_UNHEALTHY: Severity.CRITICAL,
    DriftCode.UDR_INVARIANT_BROKEN: Severity.CRITICAL,
    DriftCode.NIC_ROUTE_WRONG: Severity.CRITICAL,
    # The real route is fine or wrong on its own (NIC_ROUTE_WRONG); a mismatch means our model of
    # Azure's routing is off for this NIC: worth a look, not a page.
    DriftCode.NIC_ROUTE_MISMATCH: Severity.WARNING,
    DriftCode.OBSERVATION_FAILED: Severity.WARNING,
}

FIXER: dict[DriftCode, Fixer] = {
    DriftCode.ROUTE_SERVER_UNHEALTHY: Fixer.HUMAN,
    DriftCode.BRANCH_TO_BRANCH_DISABLED: Fixer.AZURE_WRITE,
    DriftCode.PEER_MISSING: Fixer.AZURE_WRITE,
    DriftCode.PEER_MISMATCH: Fixer.AZURE_WRITE,
    DriftCode.PEER_FAILED: Fixer.AZURE_WRITE,
    DriftCode.PEER_UNEXPECTED: Fixer.HUMAN,
    DriftCode.PEER_DOWN: Fixer.NVA_AGENT,
    DriftCode.ROUTE_MISSING: Fixer.NVA_AGENT,
    DriftCode.ROUTE_NEXT_HOP_WRONG: Fixer.NVA_AGENT,
    DriftCode.ROUTE_REJECTED_LOOP: Fixer.NVA_AGENT,
    DriftCode.ROUTE_UNEXPECTED: Fixer.HUMAN,
    DriftCode.ROUTE_LIMIT_RISK: Fixer.HUMAN,
    DriftCode.GATEWAY_NOT_LEARNING: Fixer.HUMAN,
    DriftCode.GATEWAY_NOT_ADVERTISING: Fixer.HUMAN,
    DriftCode.GATEWAY_NOT_ACTIVE_ACTIVE: Fixer.HUMAN,
    DriftCode.FIREWALL_UNHEALTHY: Fixer.HUMAN,
    DriftCode.UDR_INVARIANT_BROKEN: Fixer.HUMAN,
    DriftCode.NIC_ROUTE_WRONG: Fixer.HUMAN,
    DriftCode.NIC_ROUTE_MISMATCH: Fixer.HUMAN,
    DriftCode.OBSERVATION_FAILED: Fixer.NOBODY,
}


# Subject conventions, so identities stay stable and inhibition can match drifts to their cause.
# Segments are `key=value` joined by `/`; a prefix value keeps its own `/` and always comes last.
SUBJECTS: dict[DriftCode, str] = {
    DriftCode.ROUTE_SERVER_UNHEALTHY: "route_server=<name>",
    DriftCode.BRANCH_TO_BRANCH_DISABLED: "route_server=<name>",
    DriftCode.PEER_MISSING: "peer=<name>",
    DriftCode.PEER_MISMATCH: "peer=<name>",
    DriftCode.PEER_FAILED: "peer=<name>",
    DriftCode.PEER_UNEXPECTED: "peer=<connection name>",
    DriftCode.PEER_DOWN: "peer=<name>/instance=<RouteServiceRole_IN_n | ARS IP>",
    DriftCode.ROUTE_MISSING: "peer=<name>/instance=<instance>/prefix=<prefix>",
    DriftCode.ROUTE_NEXT_HOP_WRONG: "peer=<name>/instance=<instance>/prefix=<prefix>",
    DriftCode.ROUTE_REJECTED_LOOP: "peer=<name>/instance=<instance>/prefix=<prefix>",
    DriftCode.ROUTE_UNEXPECTED: "peer=<name>/instance=<instance>/prefix=<prefix>",
    DriftCode.ROUTE_LIMIT_RISK: "peer=<name> | gateway=<name>/onprem=<peer ip>",
    DriftCode.GATEWAY_NOT_LEARNING: "gateway=<name>/prefix=<prefix>",
    DriftCode.GATEWAY_NOT_ADVERTISING: "gateway=<name>/onprem=<peer ip>/prefix=<prefix>",
    DriftCode.GATEWAY_NOT_ACTIVE_ACTIVE: "gateway=<name>",
    DriftCode.FIREWALL_UNHEALTHY: "firewall=<name or ip>",
    DriftCode.UDR_INVARIANT_BROKEN: "subnet=<vnet>:<subnet>/prefix=<prefix> | subnet=<vnet>:<subnet>/setting=<name>",
    DriftCode.NIC_ROUTE_WRONG: "nic=<name>/prefix=<prefix>",
    DriftCode.NIC_ROUTE_MISMATCH: "nic=<name>/prefix=<prefix>",
    DriftCode.OBSERVATION_FAILED: "read=<operation>/resource=<name>",
}


def subject_part(subject: str, key: str) -> str | None:
    """Value of `key=` in a subject; `prefix=` swallows the rest because prefixes contain `/`."""
    marker = f"{key}="
    for i, segment in enumerate(subject.split("/")):
        if segment.startswith(marker):
            if key == "prefix":
                return "/".join(subject.split("/")[i:])[len(marker) :]
            return segment[len(marker) :]
    return None


@dataclass(frozen=True)
class Drift:
    """One difference between desired and observed state.

    `subject` names the thing inside the target, e.g. `peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0`.
    Identity is (target, code, subject): the ledger and the alerts follow a drift across passes by it.
    """

    target: str
    code: DriftCode
    subject: str
    message: str
    expected: str = ""
    observed: str = ""

    @property
    def identity(self) -> str:
        return f"{self.target}|{self.code.value}|{self.subject}"

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.code]

    @property
    def fixer(self) -> Fixer:
        return FIXER[self.code]

    def part(self, key: str) -> str | None:
        """The value of `key=` inside the subject (see SUBJECTS), or None when absent."""
        return subject_part(self.subject, key)

    def to_dict(self) -> dict[str, str]:
        return {
            "identity": self.identity,
            "target": self.target,
            "code": self.code.value,
            "subject": self.subject,
            "severity": self.severity.value,
            "fixer": self.fixer.value,
            "message": self.message,
            "expected": self.expected,
            "observed": self.observed,
        }


def failed_reads(drifts: Iterable[Drift]) -> list[Drift]:
    """The OBSERVATION_FAILED drifts: reads that failed, so what they cover is unknown."""
    return [d for d in drifts if d.code is DriftCode.OBSERVATION_FAILED]


def is_blind(drifts: Iterable[Drift]) -> bool:
    """Whether a target's drifts include a failed read: such a pass cannot say a drift went away.
    The one definition of "blind" (ledger, verify, alerts and reports all ask it here)."""
    return any(d.code is DriftCode.OBSERVATION_FAILED for d in drifts)
