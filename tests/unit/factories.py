"""Builders for healthy desired targets and observations; tests change one thing at a time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler import desired
from reconciler.observed import (
    AgentNeighborView,
    AgentView,
    Connection,
    Firewall,
    Gateway,
    Hub,
    Observation,
    Route,
    RouteEntry,
    SubnetRouting,
)

FW = "10.0.3.4"
ARS = ("10.0.2.4", "10.0.2.5")
INST = ("RouteServiceRole_IN_0", "RouteServiceRole_IN_1")


def target(**overrides: Any) -> desired.Target:
    doc: dict[str, Any] = {
        "name": "hub",
        "subscription_id": "sub-1",
        "resource_group": "rg-hub",
        "route_server": "ars-hub",
        "firewall": {"name": "fw-hub"},
        "gateways": [{"name": "ergw", "type": "ExpressRoute", "onprem_peers": ["10.0.0.12"]}],
        "peers": [
            {
                "name": "nva1",
                "ip": "10.0.1.6",
                "asn": 65001,
                "agent_url": "https://10.0.1.6:8443",
                "token_setting": "NVA1_TOKEN",
            }
        ],
        "subnets": [
            {
                "vnet": "hub-vnet",
                "subnet": "AzureFirewallSubnet",
                "routes": [{"prefix": "0.0.0.0/0", "next_hop_type": "Internet"}],
            }
        ],
    }
    doc.update(overrides)
    return desired.Target.model_validate(doc)


def default_route(next_hop: str = FW, as_path: str = "65001", source: str = "10.0.1.6") -> Route:
    return Route("0.0.0.0/0", next_hop, as_path, "EBgp", source)


def observation(**overrides: Any) -> Observation:
    obs = Observation(
        target="hub",
        hub=Hub("Succeeded", "Provisioned", 65515, ARS, True, "ExpressRoute"),
        connections=(Connection("nva1", "10.0.1.6", 65001, "Succeeded", "Connected"),),
        learned={"nva1": {INST[0]: (default_route(),), INST[1]: (default_route(),)}},
        gateways={
            "ergw": Gateway(
                "ergw",
                learned=(Route("0.0.0.0/0", FW, "65001", "IBgp", ARS[0]),),
                advertised={"10.0.0.12": (Route("0.0.0.0/0", FW, "65515-65001"),)},
            )
        },
        firewall=Firewall("fw-hub", "Succeeded", FW),
        firewall_ip=FW,
        subnets={
            "hub-vnet:AzureFirewallSubnet": SubnetRouting(
                "hub-vnet",
                "AzureFirewallSubnet",
                "fw-rt",
                (RouteEntry("default-internet", "0.0.0.0/0", "Internet", None),),
                False,
            )
        },
        agents={
            "nva1": AgentView(
                65001,
                "sha256:x",
                tuple(AgentNeighborView(ip, 65515, "Established", (Route("0.0.0.0/0", FW, "65001"),)) for ip in ARS),
            )
        },
    )
    return replace(obs, **overrides)
