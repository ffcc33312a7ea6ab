"""The desired-state document: pydantic models, loading (YAML or JSON) and validation errors.

Owns what an operator may declare and how bad input is reported (file + path in the document).
Must not know how state is observed or fixed. `schemas/desired-state.schema.json` is generated
from `DesiredState` (`python -m reconciler schema`).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from reconciler.asn import ARS_ASN as ARS_ASN  # re-exported: the planner and the diff read it here
from reconciler.asn import MAX_PEER_ASN, checked_peer_asn
from reconciler.errors import DesiredStateError

DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
VPN_HALVES = (IPv4Network("0.0.0.0/1"), IPv4Network("128.0.0.0/1"))

# Route Server limits (https://learn.microsoft.com/azure/route-server/route-server-faq#limitations,
# the "route-server-limits" include, 2025-02-07): "Number of routes each BGP peer can advertise to
# Azure Route Server: 4,000"; "If your NVA advertises more routes than the limit, the BGP session
# gets dropped."
ROUTES_PER_PEER_LIMIT = 4000
# Same page, the note below the table: "The total number of routes advertised from virtual network
# address space and Route Server towards ExpressRoute circuit, when Branch-to-branch enabled, must not
# exceed 1,000."
ROUTES_TO_EXPRESSROUTE_LIMIT = 1000

# Hostile-input bounds: a 3,000-target fleet is ~0.7 MB and ~200,000 values; these leave room.
MAX_DOCUMENT_CHARS = 8 * 1024 * 1024
MAX_DOCUMENT_NODES = 1_000_000
MAX_PROBLEMS = 50  # an error that lists every problem of a huge document is not a clear one
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster

# YAML 1.1 (what PyYAML speaks) reads these plain words as booleans and `1:30` as the base-60 number
# 90; YAML 1.2 and every JSON tool read them as text. A document meaning one and parsed as the other
# is refused rather than guessed at.
_YAML_BOOL = "tag:yaml.org,2002:bool"
_YAML_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_YAML12_BOOLS = {"true", "false"}


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"a {type(value).__name__}" if value is not None else "null"


def _text(what: str, example: str) -> Any:
    """A validator refusing anything but a string: pydantic would read `false` as 0.0.0.0/32."""

    def check(value: object) -> object:
        if not isinstance(value, str):
            raise ValueError(f'expected {what} as text, e.g. "{example}"; got {_kind(value)}')
        return value

    return BeforeValidator(check)


def _has_length(value: str) -> str:
    if "/" not in value:
        raise ValueError("a prefix needs a length, e.g. 10.0.1.6/32 or 0.0.0.0/0")
    return value


def _exactly_int(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number; got {_kind(value)}")
    return value


# Strict scalar types: what the operator wrote is what is used, never a coerced bool or number.
IPv4 = Annotated[IPv4Address, _text("an IPv4 address", "10.0.1.6")]
Prefix = Annotated[IPv4Network, BeforeValidator(_has_length), _text("an IPv4 prefix", "0.0.0.0/0")]
PeerAsn = Annotated[
    StrictInt,
    AfterValidator(checked_peer_asn),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_PEER_ASN - 1}),
]
Name = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
SettingName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayType(StrEnum):
    EXPRESS_ROUTE = "ExpressRoute"
    VPN = "Vpn"


class FirewallPolicy(StrEnum):
    ALERT = "alert"
    WITHDRAW = "withdraw"


class Peer(Strict):
    """One NVA that must peer with both Route Server instances."""

    name: Name = Field(description="bgpConnection name on the Route Server")
    ip: IPv4 = Field(description="NVA peering IP")
    asn: PeerAsn = Field(description="NVA ASN: 16-bit, not 65515 or another ASN reserved by Azure or IANA")
    agent_url: str | None = Field(default=None, description="base URL of the NVA agent, e.g. https://10.0.1.6:8443")
    token_setting: SettingName | None = Field(
        default=None, description="name of the app setting that holds the agent's bearer token (never the token)"
    )
    agent_lab: bool = Field(
        default=False,
        description="lab only: accept a plain http:// agent_url (the bearer token would cross the network in clear)",
    )

    @field_validator("agent_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("agent_url must start with https:// (or http:// with agent_lab: true)")
        return v

    @model_validator(mode="after")
    def _token_with_url(self) -> Peer:
        if self.agent_url and not self.token_setting:
            raise ValueError("a peer with agent_url also needs token_setting (the app setting holding its token)")
        if self.agent_url and self.agent_url.startswith("http://") and not self.agent_lab:
            raise ValueError(
                "agent_url is plain http://: the agent's token would cross the network in clear; "
                "use https:// (README 'The NVA agent': TLS/mTLS), or set agent_lab: true for a lab agent"
            )
        return self


class Firewall(Strict):
    """Where the default route's next hop must point: a firewall resource (its real IP) or a fixed IP."""

    name: Name | None = Field(default=None, description="Azure Firewall resource name; the next hop follows its IP")
    resource_group: Name | None = Field(default=None, description="defaults to the target's resource group")
    private_ip: IPv4 | None = Field(default=None, description="fixed next hop when no resource is named")
    unhealthy_policy: FirewallPolicy = Field(
        default=FirewallPolicy.ALERT,
        description="alert (default), or withdraw the default route so on-premises uses its own breakout",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Firewall:
        if (self.name is None) == (self.private_ip is None):
            raise ValueError("give exactly one of firewall.name (resource) or firewall.private_ip (fixed)")
        return self


class Gateway(Strict):
    name: Name
    resource_group: Name | None = None
    type: GatewayType
    onprem_peers: list[IPv4] = Field(
        default_factory=list, description="on-premises BGP peers the gateway must advertise the prefixes to"
    )


class RouteRequirement(Strict):
    prefix: Prefix
    next_hop_type: Literal["Internet", "VirtualAppliance", "VirtualNetworkGateway", "VnetLocal", "None"]
    next_hop_ip: IPv4 | None = None

    @model_validator(mode="after")
    def _ip_for_appliance(self) -> RouteRequirement:
        if (self.next_hop_type == "VirtualAppliance") != (self.next_hop_ip is not None):
            raise ValueError("next_hop_ip is required for VirtualAppliance and not allowed otherwise")
        return self


class SubnetInvariant(Strict):
    """A subnet whose route table must hold routes (platform rule 4: ARS pushes 0/0 into every subnet)."""

    vnet: Name
    subnet: Name
    resource_group: Name | None = None
    routes: list[RouteRequirement] = Field(min_length=1)
    disable_bgp_route_propagation: StrictBool | None = None


class ProbeExpect(StrEnum):
    FIREWALL = "firewall"  # e.g. a spoke VM: internet traffic must reach the firewall's IP
    INTERNET = "internet"  # e.g. the NVA's own NIC: internet traffic must leave directly


class ProbeNic(Strict):
    """A NIC whose real effective route table is read (effectiveRouteTable) to judge its internet next hop."""

    nic: Name = Field(description="network interface name")
    resource_group: Name | None = Field(default=None, description="defaults to the target's resource group")
    expect: ProbeExpect = Field(description="where its internet traffic must go: firewall or internet")
    vnet: Name | None = Field(default=None, description="its VNet, when its subnet is also watched under subnets")
    subnet: Name | None = Field(
        default=None, description="its subnet; when watched, the computed route is compared with the real one"
    )


class Policy(Strict):
    """What the reconciler may change for this target."""

    nva_fixes: StrictBool = Field(default=True, description="ask the NVA agent to fix NVA-side drift")
    azure_writes: StrictBool = Field(default=False, description="create/repair bgpConnections, enable branch-to-branch")
    action_budget: StrictInt = Field(default=5, ge=0, le=100, description="most fix steps in one pass for this target")


def _time(value: object) -> object:
    if not isinstance(value, datetime | str):
        raise ValueError(f"expected a time such as 2026-11-25T22:00:00Z; got {_kind(value)}")
    return value


class MaintenanceWindow(Strict):
    start: Annotated[datetime, BeforeValidator(_time)]
    end: Annotated[datetime, BeforeValidator(_time)]
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("maintenance window times need a timezone, e.g. 2026-11-25T22:00:00Z")
        if self.end <= self.start:
            raise ValueError("maintenance window end must be after start")
        return self


class Target(Strict):
    """One Route Server and everything that must be true around it."""

    name: Name
    subscription_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-]+$")]
    resource_group: Name
    route_server: Name
    branch_to_branch: StrictBool = True
    firewall: Firewall
    gateways: list[Gateway] = Field(default_factory=list)
    prefixes: list[Prefix] = Field(default_factory=lambda: [DEFAULT_ROUTE], min_length=1)
    peers: list[Peer] = Field(min_length=1)
    subnets: list[SubnetInvariant] = Field(default_factory=list)
    probes: list[ProbeNic] = Field(default_factory=list, description="NICs whose real effective routes are judged")
    policy: Policy = Field(default_factory=Policy)
    suspend: StrictBool = Field(default=False, description="observe and record, but change nothing")
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    route_limit_warn: StrictInt = Field(
        default=3600,
        ge=1,
        le=ROUTES_PER_PEER_LIMIT,
        description=f"warn when a peer sends Route Server this many routes (the limit is {ROUTES_PER_PEER_LIMIT})",
    )
    expressroute_route_limit_warn: StrictInt = Field(
        default=900,
        ge=1,
        le=ROUTES_TO_EXPRESSROUTE_LIMIT,
        description=(
            "warn when an ExpressRoute gateway advertises this many routes to the circuit "
            f"(VNet + Route Server routes with branch-to-branch on; the limit is {ROUTES_TO_EXPRESSROUTE_LIMIT})"
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        names = [p.name for p in self.peers]
        ips = [p.ip for p in self.peers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate peer name in peers: {_dupes(names)}")
        if len(set(ips)) != len(ips):
            raise ValueError(f"duplicate peer ip in peers: {_dupes([str(i) for i in ips])}")
        if len(set(self.prefixes)) != len(self.prefixes):
            raise ValueError(f"duplicate prefix in prefixes: {_dupes([str(p) for p in self.prefixes])}")
        gw_types = {g.type for g in self.gateways}
        # Platform rule 5: a VPN gateway never advertises 0.0.0.0/0 to branches.
        if gw_types == {GatewayType.VPN} and DEFAULT_ROUTE in self.prefixes:
            raise ValueError(
                "a VPN gateway does not advertise 0.0.0.0/0 to branches; use prefixes [0.0.0.0/1, 128.0.0.0/1]"
            )
        return self


class DesiredState(Strict):
    """The whole document: many targets (one Route Server each)."""

    version: Annotated[Literal[1], BeforeValidator(_exactly_int)] = 1
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_targets(self) -> DesiredState:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate target name: {_dupes(names)}")
        return self

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


def _dupes(items: list[str]) -> str:
    return ", ".join(sorted(i for i, n in Counter(items).items() if n > 1))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or not part.isprintable() or any(c in part for c in ".[]: "):
            out += f"[{part!r}]"  # an operator's odd key, quoted so the path stays one readable line
        else:
            out += f".{part}" if out else part
    return out or "(document)"


def parse(data: Any, source: str = "<document>") -> DesiredState:
    """Validate an already-decoded document; raises DesiredStateError naming each path."""
    if not isinstance(data, dict):
        raise DesiredStateError(source, [("", f"the document must be a mapping, got {type(data).__name__}")])
    try:
        return DesiredState.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            # Pydantic appends union/validator tags to the location; keep only document keys.
            loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith("function-"))
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((_loc(loc), msg))
            if len(problems) == MAX_PROBLEMS:
                break
        more = exc.error_count() - len(problems)
        if more > 0:
            problems.append(("", f"... and {more} more problem(s)"))
        raise DesiredStateError(source, problems) from None


def load(path: str | Path) -> DesiredState:
    """Read a YAML or JSON file and validate it; every failure is a DesiredStateError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DesiredStateError(str(p), [("", f"cannot read file: {exc}")]) from None
    return loads(text, str(p))


def loads(text: str, source: str = "<document>") -> DesiredState:
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DesiredStateError(
            source, [("", f"document is {len(text)} characters; the limit is {MAX_DOCUMENT_CHARS}")]
        )
    if source.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DesiredStateError(
                source, [("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]
            ) from None
        except RecursionError:
            raise DesiredStateError(source, [("", "document is nested too deeply")]) from None
    else:
        try:
            data = _yaml(text, source)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = (getattr(exc, "problem", None) or str(exc) or type(exc).__name__).splitlines()[0]
            raise DesiredStateError(source, [("", f"invalid YAML{where}: {problem}")]) from None
        except RecursionError:
            raise DesiredStateError(source, [("", "document is nested too deeply")]) from None
    try:
        return parse(data, source)
    except RecursionError:
        raise DesiredStateError(source, [("", "document is nested too deeply")]) from None


def _yaml(text: str, source: str) -> Any:
    """safe_load (no arbitrary Python objects from an operator's file), refusing alias bombs.

    Anchors and aliases are legitimate YAML, but a few kilobytes of nested aliases expand into
    billions of nodes that validation would walk for hours; the expanded size is counted on the
    composed graph (each node once) before anything is built.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_DOCUMENT_NODES:
            raise DesiredStateError(
                source,
                [("", f"aliases expand the document to more than {MAX_DOCUMENT_NODES} values; write it out")],
            )
        ambiguous = _yaml11_only(node)
        if ambiguous:
            raise DesiredStateError(source, ambiguous[:MAX_PROBLEMS])
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """Values the document has once every alias is expanded (recursive aliases count as too many)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = min(MAX_DOCUMENT_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in on_path:
            return MAX_DOCUMENT_NODES + 1  # an alias to an enclosing node: infinite when expanded
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _yaml11_only(root: yaml.Node) -> list[tuple[str, str]]:
    """Plain scalars YAML 1.1 reads differently from YAML 1.2 and JSON (`no`, `on`, `1:30`), by path."""
    found: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[int | str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and not node.style:  # plain: PyYAML None, libyaml ""
            text = str(node.value)
            if node.tag == _YAML_BOOL and text.lower() not in _YAML12_BOOLS:
                found.append(
                    (
                        _loc(path),
                        f"`{text}` is a YAML 1.1 boolean here but text in YAML 1.2 and JSON; "
                        f"write true or false, or quote it ('{text}') if you mean the text",
                    )
                )
            elif node.tag in _YAML_NUMBERS and ":" in text:
                found.append(
                    (_loc(path), f"`{text}` is a base-60 number in YAML 1.1; quote it ('{text}') if you mean the text")
                )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*path, i)) for i, child in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                stack.append((value, (*path, str(key.value) if isinstance(key, yaml.ScalarNode) else "?")))
                stack.append((key, (*path, "(key)")))
    return found


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def json_schema() -> dict[str, Any]:
    schema = DesiredState.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ars-reconciler.local/schemas/desired-state.schema.json"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
