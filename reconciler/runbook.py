"""What on-call does about each drift code: one runbook entry per code, kept as one table.

Owns the words (what it means for traffic, what to check in `az` or the portal, how to fix it by
hand). Pure data; must not know how drift is found, alerted or rendered. A test holds the table
complete: a new DriftCode without an entry fails the suite.

`az` commands are from the Azure CLI reference (learn.microsoft.com/cli/azure/network/routeserver,
.../routeserver/peering, .../vnet-gateway, .../firewall, .../route-table); `{rg}`, `{rs}` and the
other placeholders are filled from the target and the drift's subject (`names_for`, `Runbook.filled`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.desired import Target
from reconciler.drift import DriftCode, subject_part


@dataclass(frozen=True)
class Runbook:
    meaning: str  # what it means for on-premises traffic, in one sentence
    check: str  # the `az` command (placeholders: {rg} {rs} {peer} {gateway} {firewall} {vnet} {subnet})
    blade: str  # the portal blade to open, as its menu path
    fix: str  # how to fix it by hand

    def filled(self, names: Mapping[str, str]) -> Runbook:
        """This entry with the placeholders that `names` knows filled in (others stay visible)."""

        def fill(text: str) -> str:
            for key, value in names.items():
                text = text.replace("{" + key + "}", value)
            return text

        return Runbook(self.meaning, fill(self.check), self.blade, fill(self.fix))


def names_for(target: Target | None, subject: str) -> dict[str, str]:
    """The placeholders one drift fills: the target's resource group, Route Server and firewall, and
    the peer, gateway, firewall and subnet its subject names (the cards and the status page alike)."""
    names = {"rs": target.route_server, "rg": target.resource_group} if target else {}
    for key in ("peer", "gateway", "firewall"):
        if value := subject_part(subject, key):
            names[key] = value
    if target is not None and target.firewall.name and "firewall" not in names:
        names["firewall"] = target.firewall.name
    if (subnet := subject_part(subject, "subnet")) and ":" in subnet:
        names["vnet"], names["subnet"] = subnet.split(":", 1)
    return names


_LEARNED = "az network routeserver peering list-learned-routes -g {rg} --routeserver {rs} -n {peer}"

RUNBOOK: dict[DriftCode, Runbook] = {
    DriftCode.ROUTE_SERVER_UNHEALTHY: Runbook(
        "Route Server is not serving: routes from the NVA may not reach the VNet or the gateway.",
        "az network routeserver show -g {rg} -n {rs} --query '{state:provisioningState,routing:routingState}'",
        "Route Server → Overview (and Resource health)",
        "Wait for routingState Provisioned after a change; if Failed, re-run the last deployment or open a "
        "support case. Everything else on this target follows from it.",
    ),
    DriftCode.BRANCH_TO_BRANCH_DISABLED: Runbook(
        "The gateway stops learning the default route: on-premises internet traffic no longer goes "
        "through the firewall.",
        "az network routeserver show -g {rg} -n {rs} --query allowBranchToBranchTraffic",
        "Route Server → Configuration → Branch-to-branch",
        "Turn branch-to-branch on: az network routeserver update -g {rg} -n {rs} --allow-b2b-traffic true "
        "(or allow Azure-side writes in the target's policy).",
    ),
    DriftCode.PEER_MISSING: Runbook(
        "Route Server does not peer with the NVA: nothing the NVA advertises reaches Azure.",
        "az network routeserver peering list -g {rg} --routeserver {rs} -o table",
        "Route Server → Peers",
        "Re-create the peer with the declared IP and ASN (Peers → Add), or allow Azure-side writes.",
    ),
    DriftCode.PEER_MISMATCH: Runbook(
        "The peer points at the wrong IP or ASN: the NVA's session cannot come up.",
        "az network routeserver peering show -g {rg} --routeserver {rs} -n {peer}",
        "Route Server → Peers",
        "Correct the peer's IP/ASN to the declared values (delete and re-add), or allow Azure-side writes.",
    ),
    DriftCode.PEER_FAILED: Runbook(
        "The peer's last change failed: the session may be down or stale.",
        "az network routeserver peering show -g {rg} --routeserver {rs} -n {peer} --query provisioningState",
        "Route Server → Peers",
        "Re-apply the peer (same IP and ASN) to clear the Failed state, or allow Azure-side writes.",
    ),
    DriftCode.PEER_UNEXPECTED: Runbook(
        "A peer nobody declared can inject routes into the whole VNet.",
        "az network routeserver peering list -g {rg} --routeserver {rs} -o table",
        "Route Server → Peers",
        "Find its owner; declare it in the desired state or delete it by hand (never deleted automatically).",
    ),
    DriftCode.PEER_DOWN: Runbook(
        "One Route Server instance has no BGP session with the NVA: half of the VNet's paths (or all of "
        "them) lose the default route.",
        "vtysh -c 'show bgp summary' on the NVA; az network routeserver peering list-learned-routes "
        "-g {rg} --routeserver {rs} -n {peer}",
        "Route Server → Peers (then the NVA)",
        "Restore the neighbor statements for both Route Server IPs with ebgp-multihop on the NVA; check "
        "NSGs allow TCP 179.",
    ),
    DriftCode.ROUTE_MISSING: Runbook(
        "Route Server does not learn the prefix from the NVA: traffic for it bypasses the firewall or is black-holed.",
        _LEARNED,
        "Route Server → Peers → the peer's learned routes",
        "On the NVA: restore `network <prefix>` and the outbound route-map; check the session is up.",
    ),
    DriftCode.ROUTE_NEXT_HOP_WRONG: Runbook(
        "The default route points somewhere other than the firewall: on-premises internet traffic is not "
        "inspected, or is black-holed.",
        _LEARNED + ' --query "*[].{prefix:network,nextHop:nextHop}"',
        "Azure Firewall → Overview (private IP), then Route Server → Peers",
        "Usually the firewall was redeployed with a new IP, or a route-map lost `set ip next-hop`: set the "
        "next hop on the NVA to the firewall's current private IP.",
    ),
    DriftCode.ROUTE_REJECTED_LOOP: Runbook(
        "Route Server silently drops the route because its AS path contains 65515.",
        _LEARNED,
        "Route Server → Peers",
        "Fix the NVA's outbound route-map so it never re-advertises Azure's own routes (deny AS path _65515_).",
    ),
    DriftCode.ROUTE_UNEXPECTED: Runbook(
        "The NVA advertises a prefix nobody declared; it now steers traffic in the whole VNet.",
        _LEARNED,
        "Route Server → Peers",
        "Remove the prefix from the NVA, or declare it in the desired state if it is intended.",
    ),
    DriftCode.ROUTE_LIMIT_RISK: Runbook(
        "Close to Route Server's route limit: past it the BGP session drops and every route goes.",
        _LEARNED + " --query 'length(*[])'",
        "Route Server → Peers",
        "Summarise prefixes on the NVA before the limit is reached.",
    ),
    DriftCode.GATEWAY_NOT_LEARNING: Runbook(
        "The gateway does not hold the route from Route Server: on-premises never learns it.",
        "az network vnet-gateway list-learned-routes -g {rg} -n {gateway} -o table",
        "Virtual network gateway → BGP peers",
        "Check branch-to-branch on the Route Server and the route learned from the NVA; the gateway "
        "follows them within minutes.",
    ),
    DriftCode.GATEWAY_NOT_ADVERTISING: Runbook(
        "The gateway does not send the route to on-premises: branch traffic takes its own breakout.",
        "az network vnet-gateway list-advertised-routes -g {rg} -n {gateway} --peer <on-premises peer IP>",
        "Virtual network gateway → BGP peers",
        "Check the gateway learns the route first; a VPN gateway never advertises 0.0.0.0/0 (use two /1s).",
    ),
    DriftCode.GATEWAY_NOT_ACTIVE_ACTIVE: Runbook(
        "The VPN gateway is active-standby; Route Server needs it active-active to exchange routes with it.",
        "az network vnet-gateway show -g {rg} -n {gateway} --query activeActive",
        "Virtual network gateway → Configuration (Active-active mode)",
        "Switch the gateway to active-active (it needs a second public IP); the change takes a while.",
    ),
    DriftCode.FIREWALL_UNHEALTHY: Runbook(
        "The firewall cannot forward: a default route pointing at it black-holes on-premises internet traffic.",
        "az network firewall show -g {rg} -n {firewall} "
        "--query '{state:provisioningState,ip:ipConfigurations[0].privateIPAddress}'",
        "Azure Firewall → Overview and Metrics (Firewall health state)",
        "Restore or reallocate the firewall; the target's firewall policy decides whether the route is withdrawn.",
    ),
    DriftCode.UDR_INVARIANT_BROKEN: Runbook(
        "A subnet lost a route it must keep (e.g. the firewall's own internet breakout): traffic loops or is dropped.",
        "az network vnet subnet show -g {rg} --vnet-name {vnet} -n {subnet} --query routeTable.id",
        "Route table → Routes, and Subnets",
        "Re-add the route to the subnet's route table (and re-attach the table if it was detached).",
    ),
    DriftCode.NIC_ROUTE_WRONG: Runbook(
        "A probe NIC's real effective route sends its internet traffic elsewhere than the design says "
        "(around the firewall, or into it when it must leave directly).",
        "az network nic show-effective-route-table -g {rg} -n {nic} -o table",
        "Network interface → Help → Effective routes",
        "Follow the trace (python -m reconciler trace) to the first broken hop; fix the route there.",
    ),
    DriftCode.NIC_ROUTE_MISMATCH: Runbook(
        "ARM's effective route for a probe NIC differs from the route computed from its subnet's UDRs "
        "and Route Server's routes: something the reconciler does not model is in play.",
        "az network nic show-effective-route-table -g {rg} -n {nic} -o table",
        "Network interface → Help → Effective routes, and the subnet's Route table",
        "Compare the two routes in the drift; trust ARM's, and find the route source the model missed.",
    ),
    DriftCode.OBSERVATION_FAILED: Runbook(
        "The reconciler cannot see part of the design: nothing there is checked or fixed until it can.",
        "az network routeserver show -g {rg} -n {rs} (with the reconciler's identity)",
        "Function App → Identity, and the target's Access control (IAM)",
        "Fix access first: the managed identity's role, the agent's token setting, network reachability.",
    ),
}
