"""World files load (or fail with a path into the document), and the CLI serves one until SIGTERM."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from emulator import World, WorldError
from tests.fixtures.emulator import REFERENCE_LAB, TWO_TARGETS

REPO = Path(__file__).resolve().parents[2]


def test_reference_lab_matches_the_design_table() -> None:
    world = World.load(REFERENCE_LAB)
    rs = world.route_server("sub-1", "rg-hub", "ars-hub")
    assert (rs.asn, rs.ips, rs.hub_prefix, rs.branch_to_branch) == (
        65515,
        ["10.0.2.4", "10.0.2.5"],
        "10.0.0.0/16",
        True,
    )
    assert world.nva("10.0.1.6").asn == 65001
    assert world.firewall("sub-1", "rg-hub", "fw-hub").private_ip == "10.0.3.4"
    assert world.gateway("sub-1", "rg-hub", "ergw").onprem_peers[0].prefixes == ["10.20.10.0/24"]
    for subnet in ("AzureFirewallSubnet", "NvaSubnet"):
        table = world.route_table(
            "sub-1", "rg-hub", world.subnet("sub-1", "rg-hub", "hub-vnet", subnet).route_table or ""
        )
        assert [(r.prefix, r.next_hop_type) for r in table.routes] == [("0.0.0.0/0", "Internet")]


def test_two_targets_adds_a_vpn_hub_announcing_the_halves() -> None:
    world = World.load(TWO_TARGETS)
    assert world.gateway("sub-2", "rg-hub2", "vpngw").type == "Vpn"
    assert [a.prefix for a in world.nva("10.1.1.6").announcements] == ["0.0.0.0/1", "128.0.0.0/1"]


def test_json_round_trip_and_copies_are_independent(tmp_path: Path) -> None:
    world = World.load(REFERENCE_LAB)
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(world.to_dict()))
    loaded = World.load(path)
    assert loaded == world
    copy = loaded.copy()
    copy.nva("10.0.1.6").announcements.clear()
    assert loaded.nva("10.0.1.6").announcements


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"nvas": [{"ip": "10.0.1.6", "asn": 65001, "colour": "red"}]}, "$.nvas[0]: unknown field"),
        ({"nvas": [{"ip": "10.0.1.999", "asn": 65001}]}, "$.nvas[0].ip"),
        ({"nvas": [{"ip": "10.0.1.6", "asn": "65001x"}]}, "$.nvas[0].asn"),
        ({"nvas": [{"asn": 65001}]}, "missing required field 'ip'"),
        ({"firewalls": [{"subscription": "s", "resource_group": "r", "name": "f", "kind": "gcp"}]}, "kind"),
        (
            {
                "subnets": [
                    {
                        "subscription": "s",
                        "resource_group": "r",
                        "vnet": "v",
                        "name": "n",
                        "address_prefix": "10.0.0.0/24",
                        "route_table": "missing",
                    }
                ]
            },
            "$.subnets[0].route_table",
        ),
    ],
)
def test_bad_world_names_the_path(doc: dict[str, object], where: str) -> None:
    with pytest.raises(WorldError) as err:
        World.from_dict(doc)
    assert where in str(err.value)


def test_cli_serves_a_world_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--world", str(TWO_TARGETS), "--port", "0", "--certs-dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
        assert lines["ca_file"] == str(tmp_path / "ca.pem")
        req = urllib.request.Request(
            f"{lines['base_url']}/subscriptions/sub-2/resourceGroups/rg-hub2/providers/Microsoft.Network"
            "/virtualHubs/ars-hub2?api-version=2026-03-01",
            headers={"Authorization": "Bearer t"},
        )
        ctx = ssl.create_default_context(cafile=lines["ca_file"])
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            assert json.load(resp)["properties"]["virtualRouterIps"] == ["10.1.2.4", "10.1.2.5"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_refuses_a_bad_world(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nvas: [{ip: nope, asn: 1}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "emulator", "--world", str(bad), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "$.nvas[0].ip" in done.stderr
