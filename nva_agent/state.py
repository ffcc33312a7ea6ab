"""Pure read-back: FRR's JSON (bgp summary, advertised-routes) -> the agent's state value,
and the check that a state carries an intent.

Owns that translation and the order the agent lists neighbors and routes in. Must not know how
the JSON was obtained.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from nva_agent.models import AdvertisedRoute, AgentState, BgpIntent, NeighborState


def summary_peers(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Peers of `show bgp summary json` (wrapped per AFI); {} when BGP is not configured."""
    peers = summary.get("ipv4Unicast", {}).get("peers", {})
    return dict(peers) if isinstance(peers, Mapping) else {}


def build_state(
    summary: Mapping[str, Any], advertised: Mapping[str, Mapping[str, Any]], config_hash: str
) -> AgentState:
    """`advertised` maps a peer IP to its `advertised-routes json` output."""
    af = summary.get("ipv4Unicast", {})
    local_asn = af.get("as")
    peers = summary_peers(summary)
    neighbors = []
    for ip in sorted(peers, key=ip_order):
        p = peers[ip]
        remote_asn = int(p.get("remoteAs", 0))
        routes = advertised.get(ip, {}).get("advertisedRoutes", {})
        adv = []
        for prefix in sorted(routes, key=prefix_order):
            r = routes[prefix]
            path = str(r.get("path", ""))
            # FRR shows the path before the own AS is prepended (locally originated: "");
            # the contract reports the path as the peer receives it.
            wire = f"{local_asn} {path}".strip() if local_asn and remote_asn != local_asn else path
            adv.append(AdvertisedRoute(prefix=prefix, next_hop=str(r.get("nextHop", "")), as_path=wire))
        neighbors.append(
            NeighborState(
                ip=ip,
                remote_asn=remote_asn,
                state=str(p.get("state", "Unknown")),
                uptime_ms=int(p.get("peerUptimeMsec", 0)),
                advertised=adv,
            )
        )
    return AgentState(
        local_asn=int(local_asn) if local_asn else None,
        router_id=af.get("routerId"),
        config_hash=config_hash,
        neighbors=neighbors,
    )


def problems(state: AgentState, intent: BgpIntent) -> list[str]:
    """Why `state` does not (yet) carry `intent`; [] when every listed neighbor advertises
    exactly the intent's prefixes, with its next hop and the NVA's own AS as the path."""
    found = {n.ip: n for n in state.neighbors}
    out = []
    for want in intent.neighbors:
        n = found.get(want.ip)
        if n is None:
            out.append(f"neighbor {want.ip} is not configured")
            continue
        if n.state != "Established":
            out.append(f"neighbor {want.ip} is {n.state}, not Established")
            continue
        got = {r.prefix: r for r in n.advertised}
        missing = sorted(set(intent.prefixes) - set(got), key=prefix_order)
        extra = sorted(set(got) - set(intent.prefixes), key=prefix_order)
        if missing:
            out.append(f"neighbor {want.ip} is not sent {', '.join(missing)}")
        if extra:
            out.append(f"neighbor {want.ip} is also sent {', '.join(extra)}")
        for prefix in intent.prefixes:
            r = got.get(prefix)
            if r is None:
                continue
            if intent.next_hop and r.next_hop != intent.next_hop:
                out.append(f"neighbor {want.ip} gets {prefix} via {r.next_hop}, not {intent.next_hop}")
            if want.asn != intent.local_asn and r.as_path != str(intent.local_asn):
                out.append(f"neighbor {want.ip} gets {prefix} with AS path {r.as_path!r}, not '{intent.local_asn}'")
    return out


# The order the agent lists neighbors (by address) and routes (by network, then length) in: the
# renderer writes config in it and the emulated agent (emulator.agent) answers in it too.
def ip_order(ip: str) -> tuple[int, str]:
    try:
        return int(ipaddress.ip_address(ip)), ip
    except ValueError:
        return -1, ip  # FRR also lists interface-named peers (`neighbor eth0 interface`)


def prefix_order(p: str) -> tuple[int, int, str]:
    try:
        n = ipaddress.ip_network(p)
        return int(n.network_address), n.prefixlen, p
    except ValueError:
        return -1, -1, p
