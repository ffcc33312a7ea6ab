"""ARM resource JSON: turns world objects into the REST bodies of notes §6 (ids, names, `properties`).

Owns resource ids and the exact camelCase shapes the SDK deserialises. It must not know HTTP,
faults or how routes propagate (derive does that).
"""

from __future__ import annotations

import time
from typing import Any

from .derive import connection_state
from .world import BgpConnection, Firewall, Gateway, RouteServer, RouteTable, Subnet, World

Json = dict[str, Any]


def group_id(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network"


def hub_id(rs: RouteServer) -> str:
    return f"{group_id(rs.subscription, rs.resource_group)}/virtualHubs/{rs.name}"


def hub_etag(rs: RouteServer) -> str:
    return f'W/"{rs.generation}"'


def hub_json(rs: RouteServer) -> Json:
    rid = hub_id(rs)
    return {
        "id": rid,
        "name": rs.name,
        "type": "Microsoft.Network/virtualHubs",
        "location": rs.location,
        "etag": hub_etag(rs),
        "kind": "RouteServer",
        "properties": {
            "provisioningState": rs.provisioning_state,
            "routingState": rs.routing_state,
            "sku": "Standard",
            "virtualRouterAsn": rs.asn,
            "virtualRouterIps": list(rs.ips),
            "allowBranchToBranchTraffic": rs.branch_to_branch,
            "hubRoutingPreference": rs.routing_preference,
            "virtualRouterAutoScaleConfiguration": {"minCapacity": rs.min_capacity},
            "ipConfigurations": [{"id": f"{rid}/ipConfigurations/ipconfig1"}],
            "bgpConnections": [{"id": f"{rid}/bgpConnections/{c.name}"} for c in rs.connections],
        },
    }


def hub_ip_configuration_json(rs: RouteServer, vnet: str = "hub-vnet") -> Json:
    rid = hub_id(rs)
    group = group_id(rs.subscription, rs.resource_group)
    return {
        "id": f"{rid}/ipConfigurations/ipconfig1",
        "name": "ipconfig1",
        "type": "Microsoft.Network/virtualHubs/ipConfigurations",
        "properties": {
            "provisioningState": "Succeeded",
            "privateIPAllocationMethod": "Dynamic",
            "subnet": {"id": f"{group}/virtualNetworks/{vnet}/subnets/RouteServerSubnet"},
            "publicIPAddress": {"id": f"{group}/publicIPAddresses/{rs.name}-pip"},
        },
    }


def connection_json(rs: RouteServer, conn: BgpConnection) -> Json:
    return {
        "id": f"{hub_id(rs)}/bgpConnections/{conn.name}",
        "name": conn.name,
        "etag": 'W/"1"',
        "type": "Microsoft.Network/virtualHubs/bgpConnections",
        "properties": {
            "provisioningState": conn.provisioning_state,
            "peerIp": conn.peer_ip,
            "peerAsn": conn.peer_asn,
            "connectionState": connection_state(conn, rs),
        },
    }


def gateway_json(gw: Gateway) -> Json:
    rid = f"{group_id(gw.subscription, gw.resource_group)}/virtualNetworkGateways/{gw.name}"
    er = gw.type == "ExpressRoute"
    return {
        "id": rid,
        "name": gw.name,
        "type": "Microsoft.Network/virtualNetworkGateways",
        "location": gw.location,
        "properties": {
            "provisioningState": gw.provisioning_state,
            "gatewayType": gw.type,
            "vpnType": "RouteBased",
            "enableBgp": not er,
            "activeActive": (len(gw.ips) > 1 and not er) if gw.active_active is None else gw.active_active,
            "sku": {"name": "ErGw1AZ", "tier": "ErGw1AZ"} if er else {"name": "VpnGw1AZ", "tier": "VpnGw1AZ"},
            "bgpSettings": {"asn": 65515, "bgpPeeringAddress": ",".join(gw.ips), "peerWeight": 0},
            "ipConfigurations": [
                {
                    "id": f"{rid}/ipConfigurations/default",
                    "name": "default",
                    "properties": {
                        "privateIPAllocationMethod": "Dynamic",
                        "subnet": {
                            "id": f"{group_id(gw.subscription, gw.resource_group)}"
                            "/virtualNetworks/hub-vnet/subnets/GatewaySubnet"
                        },
                    },
                }
            ],
        },
    }


def firewall_json(fw: Firewall) -> Json:
    group = group_id(fw.subscription, fw.resource_group)
    rid = f"{group}/azureFirewalls/{fw.name}"
    props: Json = {"provisioningState": fw.provisioning_state, "threatIntelMode": "Alert"}
    if fw.kind == "vwan":
        # Secured virtual hub: no ipConfigurations; the private IP lives under hubIPAddresses.
        props["sku"] = {"name": "AZFW_Hub", "tier": "Standard"}
        props["ipConfigurations"] = []
        props["virtualHub"] = {"id": f"{group}/virtualHubs/{fw.virtual_hub or 'vwan-hub'}"}
        if fw.private_ip is not None:
            props["hubIPAddresses"] = {
                "privateIPAddress": fw.private_ip,
                "publicIPs": {"addresses": [{"address": "20.1.2.3"}], "count": 1},
            }
    else:
        props["sku"] = {"name": "AZFW_VNet", "tier": "Standard"}
        # A deallocated firewall keeps its resource but loses its IP configuration.
        props["ipConfigurations"] = (
            []
            if fw.private_ip is None
            else [
                {
                    "id": f"{rid}/azureFirewallIpConfigurations/ipconfig",
                    "name": "ipconfig",
                    "properties": {
                        "privateIPAddress": fw.private_ip,
                        "subnet": {"id": f"{group}/virtualNetworks/{fw.vnet}/subnets/AzureFirewallSubnet"},
                        "publicIPAddress": {"id": f"{group}/publicIPAddresses/{fw.name}-pip"},
                    },
                }
            ]
        )
    return {
        "id": rid,
        "name": fw.name,
        "type": "Microsoft.Network/azureFirewalls",
        "location": fw.location,
        "properties": props,
    }


# FirewallHealth as a percentage (Azure Firewall metrics docs: 100 healthy, 50 Degraded with
# reason "SNAT port"); the docs give no figure for Unhealthy, so 0 is this emulator's choice.
_HEALTH_PERCENT = {"Healthy": 100.0, "Degraded": 50.0, "Unhealthy": 0.0}


def firewall_metrics_json(fw: Firewall, health_asked: bool, now: float) -> Json:
    """Azure Monitor Metrics - List for a firewall (shape: Microsoft.Insights 2023-10-01 GetMetric.json),
    one time series split by the Status and Reason dimensions, the last five minutes at PT1M."""
    rid = f"{group_id(fw.subscription, fw.resource_group)}/azureFirewalls/{fw.name}"
    minute = int(now // 60) * 60
    stamps = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute - 60 * k)) for k in range(4, -1, -1)]
    value: list[Json] = []
    if health_asked:
        dims = [("status", fw.health), ("reason", fw.health_reason)]
        value.append(
            {
                "id": f"{rid}/providers/Microsoft.Insights/metrics/FirewallHealth",
                "type": "Microsoft.Insights/metrics",
                "name": {"value": "FirewallHealth", "localizedValue": "Firewall health state"},
                "displayDescription": "Indicates the overall health of this firewall",
                "unit": "Percent",
                "timeseries": [
                    {
                        "metadatavalues": [{"name": {"value": k, "localizedValue": k}, "value": v} for k, v in dims],
                        "data": [{"timeStamp": t, "average": _HEALTH_PERCENT[fw.health]} for t in stamps],
                    }
                ],
                "errorCode": "Success",
            }
        )
    return {
        "cost": 0,
        "timespan": f"{stamps[0]}/{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(minute + 60))}",
        "interval": "PT1M",
        "value": value,
        "namespace": "Microsoft.Network/azureFirewalls",
        "resourceregion": fw.location,
    }


def route_table_id(subscription: str, resource_group: str, name: str) -> str:
    return f"{group_id(subscription, resource_group)}/routeTables/{name}"


def subnet_id(sn: Subnet) -> str:
    return f"{group_id(sn.subscription, sn.resource_group)}/virtualNetworks/{sn.vnet}/subnets/{sn.name}"


def route_table_json(world: World, rt: RouteTable) -> Json:
    rid = route_table_id(rt.subscription, rt.resource_group, rt.name)
    routes: list[Json] = []
    for r in rt.routes:
        props: Json = {
            "addressPrefix": r.prefix,
            "nextHopType": r.next_hop_type,
            "provisioningState": "Succeeded",
        }
        if r.next_hop_ip is not None:
            props["nextHopIpAddress"] = r.next_hop_ip
        routes.append({"id": f"{rid}/routes/{r.name}", "name": r.name, "properties": props})
    return {
        "id": rid,
        "name": rt.name,
        "type": "Microsoft.Network/routeTables",
        "location": rt.location,
        "properties": {
            "disableBgpRoutePropagation": rt.disable_bgp_route_propagation,
            "provisioningState": "Succeeded",
            "routes": routes,
            "subnets": [{"id": subnet_id(s)} for s in world.subnets_using(rt)],
        },
    }


def subnet_json(sn: Subnet) -> Json:
    props: Json = {"addressPrefix": sn.address_prefix, "provisioningState": "Succeeded"}
    if sn.route_table is not None:
        props["routeTable"] = {"id": route_table_id(sn.subscription, sn.resource_group, sn.route_table)}
    return {
        "id": subnet_id(sn),
        "name": sn.name,
        "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": props,
    }


def arm_error(code: str, message: str) -> Json:
    return {"error": {"code": code, "message": message}}
