"""ARM JSON -> observed values: the one place where an answer from Azure is checked before use.

Owns the shapes of every body the collector reads (notes §6, tests/fixtures/arm/ from Microsoft's
published examples) and turns each into `observed` values or raises `Malformed` naming what is
wrong. IPs and prefixes are parsed with `ipaddress` here, never trusted as text. Pure: no I/O, no
SDK, no logging; must not judge drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any

from reconciler.observed import (
    Connection,
    EffectiveRoute,
    Firewall,
    FirewallHealth,
    GatewayConfig,
    HealthStatus,
    Hub,
    InstanceRoutes,
    Route,
    RouteEntry,
)

# Platform rule 8: learned/advertised routes are keyed by ARS instance. Published `az` output also
# carries a sibling `"value": null`, which is not an instance.
INSTANCE_KEY = re.compile(r"^RouteServiceRole_IN_\d+$")


class Malformed(ValueError):
    """An ARM answer that does not have the documented shape; the read becomes unknown."""


@dataclass(frozen=True)
class Instances:
    """A parsed learned/advertised-routes answer, plus the top-level keys that were not instances."""

    routes: InstanceRoutes
    ignored: tuple[str, ...]


# ---- small typed getters -------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Malformed(f"{where}: expected an object, got {_kind(value)}")
    return value


def _props(body: Any, where: str) -> Mapping[str, Any]:
    props = _obj(body, where).get("properties")
    return _obj(props, f"{where}.properties")


def _list(value: Any, where: str, *, optional: bool = True) -> list[Any]:
    if value is None and optional:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{where}: expected a list, got {_kind(value)}")
    return value


def _str(value: Any, where: str, *, optional: bool = True) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{where}: expected a string, got {_kind(value)}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{where}: expected an integer, got {_kind(value)}")
    return value


def _bool(value: Any, where: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Malformed(f"{where}: expected true/false, got {_kind(value)}")
    return value


def _ip(value: Any, where: str, *, optional: bool = True) -> str | None:
    """An IP address from Azure, normalised; an empty string counts as absent (ARM sends "" too)."""
    if (value is None or value == "") and optional:
        return None
    text = _str(value, where, optional=False)
    try:
        return str(ip_address(text))
    except ValueError:
        raise Malformed(f"{where}: {text[:60]!r} is not an IP address") from None


def _prefix(value: Any, where: str) -> str:
    text = _str(value, where, optional=False)
    try:
        return str(ip_network(text, strict=False))
    except ValueError:
        raise Malformed(f"{where}: {text[:60]!r} is not a prefix") from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# ---- resources ---------------------------------------------------------------------------------


def hub(body: Any) -> Hub:
    """GET virtualHubs/{name} (VirtualHubGet.json)."""
    p = _props(body, "hub")
    ips = tuple(_ip(v, f"hub.properties.virtualRouterIps[{i}]", optional=False) or "" for i, v in
                enumerate(_list(p.get("virtualRouterIps"), "hub.properties.virtualRouterIps")))  # fmt: skip
    return Hub(
        provisioning_state=_str(p.get("provisioningState"), "hub.properties.provisioningState"),
        routing_state=_str(p.get("routingState"), "hub.properties.routingState"),
        asn=_int(p.get("virtualRouterAsn"), "hub.properties.virtualRouterAsn"),
        ips=ips,
        branch_to_branch=_bool(p.get("allowBranchToBranchTraffic"), "hub.properties.allowBranchToBranchTraffic"),
        routing_preference=_opt_str(p.get("hubRoutingPreference"), "hub.properties.hubRoutingPreference") or None,
    )


def connection_page(body: Any) -> tuple[tuple[Connection, ...], str | None]:
    """One page of GET virtualHubs/{name}/bgpConnections (VirtualHubBgpConnectionList.json)."""
    page = _obj(body, "bgpConnections")
    out = []
    for i, item in enumerate(_list(page.get("value"), "bgpConnections.value", optional=False)):
        where = f"bgpConnections.value[{i}]"
        p = _props(item, where)
        out.append(
            Connection(
                name=_str(_obj(item, where).get("name"), f"{where}.name", optional=False),
                peer_ip=_ip(p.get("peerIp"), f"{where}.properties.peerIp", optional=False) or "",
                peer_asn=_int(p.get("peerAsn"), f"{where}.properties.peerAsn"),
                provisioning_state=_str(p.get("provisioningState"), f"{where}.properties.provisioningState"),
                connection_state=_str(p.get("connectionState"), f"{where}.properties.connectionState"),
            )
        )
    next_link = _opt_str(page.get("nextLink"), "bgpConnections.nextLink")
    return tuple(out), next_link or None


def firewall(body: Any, name: str) -> Firewall:
    """GET azureFirewalls/{name} (AzureFirewallGet.json; vWAN: hubIPAddresses).

    The private IP is on whichever ipConfigurations entry has one: a firewall with forced tunnelling
    also lists its management configuration, and the order is not documented.
    """
    p = _props(body, "firewall")
    ip: str | None = None
    for i, cfg in enumerate(_list(p.get("ipConfigurations"), "firewall.properties.ipConfigurations")):
        where = f"firewall.properties.ipConfigurations[{i}]"
        cfg_props = _obj(_obj(cfg, where).get("properties") or {}, f"{where}.properties")
        ip = ip or _ip(cfg_props.get("privateIPAddress"), f"{where}.properties.privateIPAddress")
    hub_ips = p.get("hubIPAddresses")
    if ip is None and hub_ips is not None:
        ip = _ip(_obj(hub_ips, "firewall.properties.hubIPAddresses").get("privateIPAddress"),
                 "firewall.properties.hubIPAddresses.privateIPAddress")  # fmt: skip
    state = _str(p.get("provisioningState"), "firewall.properties.provisioningState")
    return Firewall(name=name, provisioning_state=state, private_ip=ip)


def gateway(body: Any) -> GatewayConfig:
    """GET virtualNetworkGateways/{name} (VirtualNetworkGatewayGet.json)."""
    p = _props(body, "gateway")
    return GatewayConfig(
        gateway_type=_str(p.get("gatewayType"), "gateway.properties.gatewayType"),
        active_active=_bool(p.get("activeActive"), "gateway.properties.activeActive"),
        provisioning_state=_str(p.get("provisioningState"), "gateway.properties.provisioningState"),
    )


def vnet_route_tables(body: Any) -> dict[str, str | None]:
    """GET virtualNetworks/{name} (VirtualNetworkGet.json): subnet name (lower case) -> route table id."""
    p = _props(body, "vnet")
    out: dict[str, str | None] = {}
    for i, sn in enumerate(_list(p.get("subnets"), "vnet.properties.subnets")):
        where = f"vnet.properties.subnets[{i}]"
        name = _str(_obj(sn, where).get("name"), f"{where}.name", optional=False)
        sp = _obj(_obj(sn, where).get("properties") or {}, f"{where}.properties")
        rt = sp.get("routeTable")
        out[name.lower()] = None if rt is None else (_opt_str(_obj(rt, f"{where}.properties.routeTable").get("id"),
                                                              f"{where}.properties.routeTable.id") or None)  # fmt: skip
    return out


def route_table(body: Any) -> tuple[tuple[RouteEntry, ...], bool | None]:
    """GET routeTables/{name} (RouteTableGet.json): its routes and disableBgpRoutePropagation."""
    p = _props(body, "routetable")
    routes = []
    for i, r in enumerate(_list(p.get("routes"), "routetable.properties.routes")):
        where = f"routetable.properties.routes[{i}]"
        rp = _props(r, where)
        routes.append(
            RouteEntry(
                name=_str(_obj(r, where).get("name"), f"{where}.name"),
                prefix=_prefix(rp.get("addressPrefix"), f"{where}.properties.addressPrefix"),
                next_hop_type=_str(rp.get("nextHopType"), f"{where}.properties.nextHopType", optional=False),
                next_hop_ip=_ip(rp.get("nextHopIpAddress"), f"{where}.properties.nextHopIpAddress"),
            )
        )
    disable = p.get("disableBgpRoutePropagation")
    where = "routetable.properties.disableBgpRoutePropagation"
    return tuple(routes), None if disable is None else _bool(disable, where)


# ---- route queries (long-running POSTs) --------------------------------------------------------


def _route(value: Any, where: str) -> Route:
    r = _obj(value, where)
    return Route(
        prefix=_prefix(r.get("network"), f"{where}.network"),
        next_hop=_ip(r.get("nextHop"), f"{where}.nextHop"),
        as_path=_str(r.get("asPath"), f"{where}.asPath"),
        origin=_str(r.get("origin"), f"{where}.origin"),
        source_peer=_ip(r.get("sourcePeer"), f"{where}.sourcePeer") or "",
        local_address=_ip(r.get("localAddress"), f"{where}.localAddress"),
    )


def _result_of(body: Any, what: str) -> Any:
    """The result inside an LRO answer; an operation-status body is not one (notes §5).

    ARM's async protocol: the result of a POST is read from its Location URL. An answer with only
    Azure-AsyncOperation leaves the client holding the status resource (`{"status": ...}`), whose
    optional `properties` is the only place a result could be; anything else is no result at all.
    """
    if isinstance(body, Mapping) and "status" in body and not any(INSTANCE_KEY.match(str(k)) for k in body):
        if body.get("properties") is not None:
            return body["properties"]
        raise Malformed(f"{what}: the operation finished without a result (an operation status, not a route list)")
    return body


def instance_routes(body: Any, what: str = "routes") -> Instances:
    """POST bgpConnections/{name}/learnedRoutes or advertisedRoutes (VirtualRouterPeerList*Route.json)."""
    result = _obj(_result_of(body, what), what)
    instances = {k: v for k, v in result.items() if INSTANCE_KEY.match(str(k))}
    ignored = tuple(sorted(str(k) for k in result if not INSTANCE_KEY.match(str(k))))
    if result and not instances:
        raise Malformed(f"{what}: no RouteServiceRole_IN_* key (keys: {', '.join(ignored)[:120]})")
    routes = {
        inst: tuple(_route(r, f"{what}.{inst}[{i}]") for i, r in enumerate(_list(v, f"{what}.{inst}")))
        for inst, v in sorted(instances.items())
    }
    return Instances(routes, ignored)


def gateway_routes(body: Any, what: str = "gateway routes") -> tuple[Route, ...]:
    """POST virtualNetworkGateways/{name}/getLearnedRoutes or getAdvertisedRoutes: `{"value": [...]}`.

    Microsoft's own examples answer `{}` here: no `value` is no route list, so unknown, never "none".
    """
    result = _obj(_result_of(body, what), what)
    if "value" not in result:
        raise Malformed(f"{what}: no 'value' route list")
    return tuple(_route(r, f"{what}.value[{i}]") for i, r in enumerate(_list(result["value"], f"{what}.value",
                                                                               optional=False)))  # fmt: skip


def effective_routes(body: Any) -> tuple[EffectiveRoute, ...]:
    """POST networkInterfaces/{name}/effectiveRouteTable: `{"value": [...]}`
    (NetworkInterfaceEffectiveRouteTableList.json); no `value` is no route list: unknown."""
    what = "effectiveRouteTable"
    result = _obj(_result_of(body, what), what)
    if "value" not in result:
        raise Malformed(f"{what}: no 'value' route list")
    out = []
    for i, value in enumerate(_list(result["value"], f"{what}.value", optional=False)):
        r, where = _obj(value, f"{what}.value[{i}]"), f"{what}.value[{i}]"
        out.append(
            EffectiveRoute(
                prefixes=tuple(_prefix(p, f"{where}.addressPrefix") for p in _list(r.get("addressPrefix"), where)),
                source=_str(r.get("source"), f"{where}.source"),
                state=_str(r.get("state"), f"{where}.state"),
                next_hop_type=_str(r.get("nextHopType"), f"{where}.nextHopType"),
                next_hop_ips=tuple(
                    ip for h in _list(r.get("nextHopIpAddress"), where) if (ip := _ip(h, f"{where}.nextHopIpAddress"))
                ),
            )
        )
    return tuple(out)


# ---- Azure Monitor ---------------------------------------------------------------------------------


def firewall_health(body: Any) -> FirewallHealth | None:
    """GET {firewall id}/providers/Microsoft.Insights/metrics?metricnames=FirewallHealth (Metrics - List).

    One time series per (Status, Reason) dimension pair; the newest data point that carries a value
    decides. No data point at all is None: the metric says nothing, which is not "healthy".
    Shape: specification/monitor/.../Microsoft.Insights/stable/2023-10-01/examples/GetMetric.json.
    """
    doc = _obj(body, "metrics")
    newest: tuple[str, FirewallHealth] | None = None
    for i, metric in enumerate(_list(doc.get("value"), "metrics.value", optional=False)):
        mw = f"metrics.value[{i}]"
        name = _str(_obj(_obj(metric, mw).get("name"), f"{mw}.name").get("value"), f"{mw}.name.value")
        if name.lower() != "firewallhealth":
            continue
        for j, series in enumerate(_list(_obj(metric, mw).get("timeseries"), f"{mw}.timeseries")):
            sw = f"{mw}.timeseries[{j}]"
            dims: dict[str, str] = {}
            for k, md in enumerate(_list(_obj(series, sw).get("metadatavalues"), f"{sw}.metadatavalues")):
                dw = f"{sw}.metadatavalues[{k}]"
                key = _str(_obj(_obj(md, dw).get("name"), f"{dw}.name").get("value"), f"{dw}.name.value")
                dims[key.lower()] = _str(_obj(md, dw).get("value"), f"{dw}.value")
            for k, point in enumerate(_list(_obj(series, sw).get("data"), f"{sw}.data")):
                pw = f"{sw}.data[{k}]"
                pt = _obj(point, pw)
                value = pt.get("average")
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise Malformed(f"{pw}.average: expected a number, got {_kind(value)}")
                stamp = _str(pt.get("timeStamp"), f"{pw}.timeStamp")
                status = _health_status(dims.get("status"), f"{sw}.metadatavalues(status)")
                health = FirewallHealth(status, dims.get("reason", ""), float(value))
                if newest is None or stamp >= newest[0]:
                    newest = (stamp, health)
    return None if newest is None else newest[1]


def _health_status(value: str | None, where: str) -> HealthStatus:
    if value is None:
        # Without the Status dimension only the percentage is left, and the docs give it three meanings
        # (100 healthy, 50 Degraded for SNAT ports, 0 when no SNAT usage is reported): not judged.
        return HealthStatus.UNKNOWN
    for status in HealthStatus:
        if status.value.lower() == value.lower():
            return status
    raise Malformed(f"{where}: {value[:40]!r} is not Healthy, Degraded or Unhealthy")
