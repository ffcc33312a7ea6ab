"""The custom roles list exactly the ARM actions the code calls: reconciler/arm.py is scanned for
azure-mgmt-network SDK calls, each call is mapped to its RBAC action, and the role files must match."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

from azure.mgmt.network.aio import NetworkManagementClient

from reconciler import activity_log
from reconciler.arm import RAW_READ_ACTIONS, StaticTokenCredential

ROOT = Path(__file__).resolve().parents[2]
ARM = ROOT / "reconciler" / "arm.py"
READER = ROOT / "infra" / "reconciler-role.json"
FIXER = ROOT / "infra" / "reconciler-fixer-role.json"

# (operation group, method) -> RBAC action. A new SDK call in arm.py fails the test until it is here.
ACTIONS: dict[tuple[str, str], str] = {
    ("virtual_hubs", "get"): "Microsoft.Network/virtualHubs/read",
    ("virtual_hub_bgp_connections", "list"): "Microsoft.Network/virtualHubs/bgpConnections/read",
    (
        "virtual_hub_bgp_connections",
        "begin_list_learned_routes",
    ): "Microsoft.Network/virtualHubs/bgpConnections/learnedRoutes/action",
    (
        "virtual_network_gateways",
        "begin_get_learned_routes",
    ): "Microsoft.Network/virtualNetworkGateways/getLearnedRoutes/action",
    (
        "virtual_network_gateways",
        "begin_get_advertised_routes",
    ): "Microsoft.Network/virtualNetworkGateways/getAdvertisedRoutes/action",
    ("azure_firewalls", "get"): "Microsoft.Network/azureFirewalls/read",
    ("subnets", "get"): "Microsoft.Network/virtualNetworks/subnets/read",
    ("virtual_networks", "get"): "Microsoft.Network/virtualNetworks/read",
    ("route_tables", "get"): "Microsoft.Network/routeTables/read",
    # Azure docs, virtual-network-network-interface "Permissions": "Get network interface effective route table".
    ("network_interfaces", "begin_get_effective_route_table"):
        "Microsoft.Network/networkInterfaces/effectiveRouteTable/action",
    ("virtual_hub_bgp_connection", "begin_create_or_update"): "Microsoft.Network/virtualHubs/bgpConnections/write",
    ("virtual_hubs", "begin_create_or_update"): "Microsoft.Network/virtualHubs/write",
}
# A begin_* call is a long-running operation: its status and result are polled under locations/.
LRO_POLLING = {"Microsoft.Network/locations/operations/read", "Microsoft.Network/locations/operationResults/read"}
WRITES = ("begin_create_or_update", "create_or_update", "begin_delete", "delete", "update", "begin_update")


def operation_groups() -> set[str]:
    client = NetworkManagementClient(StaticTokenCredential("t"), "sub")  # no I/O until a call
    return {name for name, value in vars(client).items() if hasattr(value, "_client") and not name.startswith("_")}


def sdk_calls() -> set[tuple[str, str]]:
    """Every `<client>.<operation group>.<method>` in arm.py, called directly or handed to a helper."""
    groups = operation_groups()
    calls = set()
    for node in ast.walk(ast.parse(ARM.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in groups:
            calls.add((node.value.attr, node.attr))
    return calls


def read_operations() -> set[str]:
    """Every operation name passed to `self.read(<subscription>, "<op>", ...)` in arm.py."""
    ops = set()
    for node in ast.walk(ast.parse(ARM.read_text())):
        is_read = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "read"
        if is_read and len(node.args) >= 2 and isinstance(op := node.args[1], ast.Constant):
            ops.add(str(op.value))
    return ops


# Reads that go through an SDK call (their action comes from ACTIONS); every other read is a raw GET.
SDK_READS = {"routes.learned", "gateway.learned", "gateway.advertised", "nic.routes"}


def actions(path: Path) -> set[str]:
    role = json.loads(path.read_text())
    assert role["IsCustom"] is True and role["DataActions"] == [] and role["NotActions"] == []
    assert len(role["Actions"]) == len(set(role["Actions"])), "duplicate action"
    return set(role["Actions"])


def test_the_scan_finds_the_collectors_calls() -> None:
    # Guards the scanners themselves: if they found nothing, the equality tests below would prove nothing.
    assert {("virtual_hubs", "get"), ("virtual_hub_bgp_connections", "begin_list_learned_routes")} <= sdk_calls()
    assert {"hub.get", "routes.learned", "firewall.health"} <= read_operations()


def test_every_raw_read_has_a_known_action() -> None:
    raw = read_operations() - SDK_READS
    assert raw == set(RAW_READ_ACTIONS), "a raw GET in arm.py needs its RBAC action in RAW_READ_ACTIONS"


def test_every_sdk_call_in_arm_py_has_a_known_action() -> None:
    unmapped = sdk_calls() - set(ACTIONS)
    assert not unmapped, f"add the RBAC action for {sorted(unmapped)} to ACTIONS and to a role in infra/"


def test_reader_role_is_exactly_the_collectors_read_actions() -> None:
    reads = {c for c in sdk_calls() if c[1] not in WRITES}
    expected = {ACTIONS[c] for c in reads} | (LRO_POLLING if any(m.startswith("begin_") for _, m in reads) else set())
    expected |= {RAW_READ_ACTIONS[op] for op in read_operations() - SDK_READS}
    expected |= {activity_log.READ_ACTION}  # "changed by" for drift the timer found (reconciler.activity_log)
    assert actions(READER) == expected


def test_the_activity_log_query_is_the_read_the_role_grants() -> None:
    path = activity_log.query_path("s", "/subscriptions/s/x", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    assert path.startswith("/subscriptions/s/providers/Microsoft.Insights/eventtypes/management/values?")
    assert activity_log.READ_ACTION in actions(READER)


def test_fixer_role_is_exactly_the_opt_in_write_actions() -> None:
    writes = {c for c in sdk_calls() if c[1] in WRITES}
    assert actions(FIXER) == {ACTIONS[c] for c in writes}
    assert not any(a.endswith(("/read", "/delete")) or "*" in a for a in actions(FIXER))


def test_no_role_grants_wildcards_or_deletes() -> None:
    for path in (READER, FIXER):
        assert not any("*" in a or a.endswith("/delete") for a in actions(path)), path.name
