"""The agent's wire values: the BGP intent it accepts and the state/result it answers with.

Owns input validation (every address and prefix is parsed with `ipaddress`, nothing reaches
FRR as free text) and the JSON shapes of the contract. Must not know FRR or HTTP.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from reconciler.asn import checked_peer_asn

ASN_MIN, ASN_MAX = 1, 4_294_967_295


def _ipv4_address(value: str) -> str:
    # ipaddress rejects leading zeros, whitespace and anything but four decimal octets;
    # the canonical str() is what FRR prints back, so what we render compares equal.
    return str(ipaddress.IPv4Address(value))


def _ipv4_prefix(value: str) -> str:
    if "/" not in value:
        raise ValueError("a prefix needs a length, e.g. 0.0.0.0/0")
    return str(ipaddress.IPv4Network(value, strict=True))  # host bits set -> error, not silent fix


IPv4Str = Annotated[
    StrictStr,
    Field(min_length=7, max_length=15, pattern=r"^[0-9.]+$", json_schema_extra={"format": "ipv4"}),
    AfterValidator(_ipv4_address),
]
IPv4PrefixStr = Annotated[
    StrictStr,
    Field(min_length=9, max_length=18, pattern=r"^[0-9./]+$", examples=["0.0.0.0/0"]),
    AfterValidator(_ipv4_prefix),
]
Asn = Annotated[StrictInt, Field(ge=ASN_MIN, le=ASN_MAX)]
# The NVA's own AS must be one Route Server peers with: 16-bit, not reserved by Azure or IANA
# (Route Server FAQ). The one rule is reconciler/asn.py (stdlib only, safe on the NVA).
LocalAsn = Annotated[Asn, AfterValidator(checked_peer_asn)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NeighborIntent(_Strict):
    """One BGP neighbor the NVA must peer with (an ARS instance)."""

    ip: IPv4Str
    asn: Asn


class BgpIntent(_Strict):
    """What the NVA must advertise, to whom, with which next hop. `prefixes: []` withdraws."""

    local_asn: LocalAsn
    neighbors: list[NeighborIntent] = Field(min_length=1, max_length=16)
    prefixes: list[IPv4PrefixStr] = Field(max_length=256)
    next_hop: IPv4Str | None = None
    dry_run: StrictBool = False

    @model_validator(mode="after")
    def _no_duplicates(self) -> BgpIntent:
        ips = [n.ip for n in self.neighbors]
        if len(set(ips)) != len(ips):
            raise ValueError("neighbor IPs must be unique")
        if len(set(self.prefixes)) != len(self.prefixes):
            raise ValueError("prefixes must be unique")
        return self


class AdvertisedRoute(_Strict):
    prefix: str
    next_hop: str
    as_path: str = Field(description="AS path as it appears on the wire (own AS prepended for eBGP)")


class NeighborState(_Strict):
    ip: str
    remote_asn: int
    state: str = Field(description="BGP FSM state as FRR names it: Idle, Connect, Active, ..., Established")
    uptime_ms: int
    advertised: list[AdvertisedRoute]


class AgentState(_Strict):
    local_asn: int | None = Field(description="null when FRR has no default-VRF `router bgp`")
    router_id: str | None
    config_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    neighbors: list[NeighborState]


class IntentResult(_Strict):
    changed: bool = Field(description="the running config differed from the intent (a change was, or would be, made)")
    applied: bool = Field(description="a change was applied and the read-back matched")
    rolled_back: bool = Field(description="a change was applied, did not verify, and the previous config was restored")
    dry_run: bool
    changes: list[str] = Field(description="config lines added (`+ `) and removed (`- `)")
    state: AgentState
    message: str


class HealthReason(StrEnum):
    """Why /v1/health says unavailable: fixed codes, because the endpoint needs no token and a
    free-text reason would tell anyone on the network file paths and process state."""

    VTY_UNREACHABLE = "vty_unreachable"
    """vtysh could not connect to any FRR daemon (FRR stopped, or the vty socket moved)."""
    BGPD_NOT_RUNNING = "bgpd_not_running"
    VTYSH_TIMEOUT = "vtysh_timeout"
    VTYSH_MISSING = "vtysh_missing"
    """vtysh (or frr-reload.py) is not installed where the agent was told to find it."""
    VTYSH_FAILED = "vtysh_failed"
    """Anything else: vtysh exited non-zero or answered something that is not JSON."""


class Health(_Strict):
    status: Literal["ok", "unavailable"]
    frr: bool
    reason: HealthReason | None = None


class ErrorBody(_Strict):
    detail: str


class PolicyRefusal(_Strict):
    """403: the intent is outside the NVA's local policy file (or a rule that always holds)."""

    detail: str
    rule: str = Field(description="the policy rule that refused it, e.g. `prefixes`, `next_hops`, `neighbors`")


class ConflictBody(_Strict):
    """409: the intent cannot be applied without changing config the agent did not write."""

    detail: str
    conflicts: list[str] = Field(description="each conflicting config line or fact, as FRR shows it")
