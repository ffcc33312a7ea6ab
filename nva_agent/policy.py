"""The NVA's local policy: the limits an intent must stay inside, set on the NVA, not by the API.

A stolen token must not be enough to make the NVA announce anything: the policy file (root-owned,
default /etc/nva-agent/policy.yaml) lists the neighbours (IP + ASN), the prefixes and the next-hop
subnets an intent may use. Owns the file's shape and the check; must not know HTTP or FRR.

    local_asn: 65001                 # optional: the only local AS an intent may name
    neighbors:                       # the Route Server instances (IP + ASN)
      - {ip: 10.0.2.4, asn: 65515}
      - {ip: 10.0.2.5, asn: 65515}
    prefixes: [0.0.0.0/0]            # exact prefixes the NVA may originate toward them
    next_hops: [10.0.3.0/26]         # subnets the next hop must lie in (AzureFirewallSubnet)
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, ValidationError

from nva_agent.models import Asn, BgpIntent, IPv4PrefixStr, NeighborIntent

DEFAULT_PATH = "/etc/nva-agent/policy.yaml"


class PolicyRule(StrEnum):
    """The rule named in a 403, so the operator knows which line of the policy said no."""

    LOCAL_ASN_NEIGHBOR = "no-local-asn-neighbor"
    """Always on, with or without a policy file: an iBGP neighbour would let the caller inject
    routes the NVA's kernel installs (more-specifics of on-premises ranges)."""
    LOCAL_ASN = "local_asn"
    NEIGHBORS = "neighbors"
    PREFIXES = "prefixes"
    NEXT_HOPS = "next_hops"
    POLICY_FILE = "policy-file"
    """The policy file is missing, unsafe or invalid: every intent is refused until it is fixed."""


class PolicyViolation(Exception):
    def __init__(self, rule: PolicyRule, detail: str) -> None:
        self.rule, self.detail = rule, detail
        super().__init__(f"{rule}: {detail}")


def _subnet(value: str) -> str:
    return str(ipaddress.IPv4Network(value, strict=True))


Subnet = Annotated[StrictStr, Field(max_length=18, pattern=r"^[0-9./]+$"), AfterValidator(_subnet)]


class Policy(BaseModel):
    """The policy file, validated; unknown keys are errors (a typo must not silently allow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    local_asn: Asn | None = None
    neighbors: list[NeighborIntent] = Field(min_length=1, max_length=16)
    prefixes: list[IPv4PrefixStr] = Field(max_length=256)
    next_hops: list[Subnet] = Field(min_length=1, max_length=16)


def parse(text: str) -> Policy:
    """The policy from YAML text; ValueError (naming the field) when it is not a valid policy."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"not a valid policy: {problems}") from exc


def check(policy: Policy | None, intent: BgpIntent) -> None:
    """Raise PolicyViolation for the first rule the intent breaks. `policy=None` (--lab) keeps
    only the rules that always hold."""
    for n in intent.neighbors:
        if n.asn == intent.local_asn:
            raise PolicyViolation(
                PolicyRule.LOCAL_ASN_NEIGHBOR,
                f"neighbor {n.ip} has the NVA's own AS {n.asn} (iBGP); the agent only peers with Route Server",
            )
    if policy is None:
        return
    if policy.local_asn is not None and intent.local_asn != policy.local_asn:
        raise PolicyViolation(
            PolicyRule.LOCAL_ASN, f"local_asn {intent.local_asn} is not the policy's {policy.local_asn}"
        )
    allowed = {(n.ip, n.asn) for n in policy.neighbors}
    for n in intent.neighbors:
        if (n.ip, n.asn) not in allowed:
            raise PolicyViolation(PolicyRule.NEIGHBORS, f"neighbor {n.ip} AS {n.asn} is not in the policy")
    for p in intent.prefixes:
        if p not in policy.prefixes:
            raise PolicyViolation(PolicyRule.PREFIXES, f"prefix {p} is not in the policy")
    if intent.next_hop is not None:
        hop = ipaddress.IPv4Address(intent.next_hop)
        if not any(hop in ipaddress.IPv4Network(s) for s in policy.next_hops):
            raise PolicyViolation(
                PolicyRule.NEXT_HOPS, f"next hop {intent.next_hop} is not in {', '.join(policy.next_hops)}"
            )
