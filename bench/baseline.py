"""The sequential baseline: the same checks the way a typical operations script does them.

Owns nothing the product uses. One synchronous azure-mgmt-network client per subscription, hubs one
after another, every call waited for, SDK defaults for LRO polling and retries, one subnet GET and
one route-table GET per subnet, and one Table Storage upsert per hub. It exists to be measured
against `reconciler` on the same emulator settings; it must not import the reconciler.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials import AccessToken
from azure.data.tables import TableServiceClient, UpdateMode
from azure.mgmt.network import NetworkManagementClient

DEFAULT = "0.0.0.0/0"
INSTANCES = ("RouteServiceRole_IN_0", "RouteServiceRole_IN_1")


class StaticToken:
    """A fixed bearer token: the emulator only wants one to be present."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator-token", int(time.time()) + 3600)


def check_hub(client: NetworkManagementClient, t: dict[str, Any]) -> list[str]:
    """Everything wrong with one hub, as text (empty when healthy)."""
    problems: list[str] = []
    rg, rs = t["resource_group"], t["route_server"]
    hub = client.virtual_hubs.get(rg, rs)
    if hub.provisioning_state != "Succeeded" or hub.routing_state != "Provisioned":
        problems.append("route server not healthy")
    if t.get("branch_to_branch", True) and not hub.allow_branch_to_branch_traffic:
        problems.append("branch-to-branch is off")
    fw = client.azure_firewalls.get(rg, t["firewall"]["name"])
    fw_ip = fw.ip_configurations[0].private_ip_address if fw.ip_configurations else None
    if fw.provisioning_state != "Succeeded" or fw_ip is None:
        problems.append("firewall not healthy")
    conns = {c.name: c for c in client.virtual_hub_bgp_connections.list(rg, rs)}
    for peer in t["peers"]:
        conn = conns.get(peer["name"])
        if conn is None or conn.connection_state != "Connected":
            problems.append(f"{peer['name']}: not connected")
            continue
        learned = client.virtual_hub_bgp_connections.begin_list_learned_routes(rg, rs, peer["name"]).result()
        for inst in INSTANCES:
            hops = {r.next_hop for r in learned.get(inst, []) if r.network == DEFAULT}
            if hops != {fw_ip}:
                problems.append(f"{peer['name']}/{inst}: default route via {sorted(map(str, hops))}")
    for gw in t["gateways"]:
        gw_learned = client.virtual_network_gateways.begin_get_learned_routes(rg, gw["name"]).result().value or []
        if not any(r.network == DEFAULT and r.next_hop == fw_ip for r in gw_learned):
            problems.append(f"{gw['name']}: does not learn the default route via the firewall")
        for onprem in gw["onprem_peers"]:
            poller = client.virtual_network_gateways.begin_get_advertised_routes(rg, gw["name"], peer=onprem)
            if not any(r.network == DEFAULT for r in poller.result().value or []):
                problems.append(f"{gw['name']}: does not advertise the default route to {onprem}")
    for sn in t["subnets"]:
        subnet = client.subnets.get(rg, sn["vnet"], sn["subnet"])
        if subnet.route_table is None:
            problems.append(f"{sn['subnet']}: no route table")
            continue
        table = client.route_tables.get(rg, subnet.route_table.id.rsplit("/", 1)[-1])
        for want in sn["routes"]:
            if not any(
                r.address_prefix == want["prefix"] and r.next_hop_type == want["next_hop_type"]
                for r in table.routes or []
            ):
                problems.append(f"{sn['subnet']}: route {want['prefix']} -> {want['next_hop_type']} missing")
    return problems


def run(base_url: str, ca_file: str, storage: str, table: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Check every hub in order and record one row per hub; returns the verdicts and the wall time."""
    service = TableServiceClient.from_connection_string(storage)
    rows = service.create_table_if_not_exists(table)
    clients: dict[str, NetworkManagementClient] = {}
    verdicts: dict[str, list[str]] = {}
    started = time.perf_counter()
    for t in targets:
        sub = t["subscription_id"]
        if sub not in clients:
            clients[sub] = NetworkManagementClient(StaticToken(), sub, base_url=base_url, connection_verify=ca_file)
        verdicts[t["name"]] = problems = check_hub(clients[sub], t)
        rows.upsert_entity(
            {
                "PartitionKey": "baseline",
                "RowKey": t["name"],
                "problems": json.dumps(problems),
                "checked_at": datetime.now(UTC),
            },
            mode=UpdateMode.REPLACE,
        )
    wall = time.perf_counter() - started
    for c in clients.values():
        c.close()
    service.close()
    return {"wall_s": wall, "verdicts": verdicts}
