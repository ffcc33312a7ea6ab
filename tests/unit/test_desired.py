"""Desired-state documents: the examples load, the schema is current, bad input is named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import desired
from reconciler.errors import DesiredStateError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "schemas" / "examples").glob("*.yaml"))

GOOD = """
version: 1
targets:
  - name: hub
    subscription_id: sub-1
    resource_group: rg
    route_server: ars
    firewall: {name: fw}
    peers: [{name: nva1, ip: 10.0.1.6, asn: 65001}]
"""


def problems(text: str, source: str = "desired.yaml") -> list[tuple[str, str]]:
    with pytest.raises(DesiredStateError) as info:
        desired.loads(text, source)
    assert str(info.value).startswith(source + ":")
    return info.value.problems


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path) -> None:
    assert desired.load(path).targets


def test_schema_file_matches_models() -> None:
    on_disk = (ROOT / "schemas" / "desired-state.schema.json").read_text()
    assert on_disk == desired.json_schema_text(), "stale: run `python -m reconciler schema --write`"


def test_good_document_gets_defaults() -> None:
    state = desired.loads(GOOD, "x.yaml")
    t = state.targets[0]
    assert [str(p) for p in t.prefixes] == ["0.0.0.0/0"]
    assert t.policy.azure_writes is False
    assert t.policy.nva_fixes is True


def test_json_input_is_accepted() -> None:
    import yaml

    state = desired.loads(json.dumps(yaml.safe_load(GOOD)), "x.json")
    assert state.targets[0].name == "hub"


BAD: list[tuple[str, str, str, str]] = [
    ("wrong type", GOOD.replace("asn: 65001", "asn: sixty"), "targets[0].peers[0].asn", "integer"),
    (
        "unknown key",
        GOOD.replace("route_server: ars", "route_server: ars\n    colour: red"),
        "targets[0].colour",
        "Extra inputs",
    ),
    ("bad ip", GOOD.replace("10.0.1.6", "10.0.1.600"), "targets[0].peers[0].ip", "IPv4 address"),
    (
        "bad prefix",
        GOOD.replace("    peers:", "    prefixes: [0.0.0.0/33]\n    peers:"),
        "targets[0].prefixes[0]",
        "IPv4 network",
    ),
    (
        "host bits in prefix",
        GOOD.replace("    peers:", "    prefixes: [10.0.0.1/8]\n    peers:"),
        "targets[0].prefixes[0]",
        "IPv4 network",
    ),
    ("ars asn for nva", GOOD.replace("asn: 65001", "asn: 65515"), "targets[0].peers[0].asn", "Route Server's own ASN"),
    ("asn 12076", GOOD.replace("asn: 65001", "asn: 12076"), "targets[0].peers[0].asn", "ExpressRoute"),
    ("asn 23456", GOOD.replace("asn: 65001", "asn: 23456"), "targets[0].peers[0].asn", "AS_TRANS"),
    ("doc asn", GOOD.replace("asn: 65001", "asn: 64500"), "targets[0].peers[0].asn", "documentation"),
    (
        "asn out of range",
        GOOD.replace("asn: 65001", "asn: 4294967296"),
        "targets[0].peers[0].asn",
        "only 16-bit ASNs",
    ),
    (
        "duplicate peers",
        GOOD.replace(
            "peers: [{name: nva1, ip: 10.0.1.6, asn: 65001}]",
            "peers: [{name: nva1, ip: 10.0.1.6, asn: 65001}, {name: nva1, ip: 10.0.1.7, asn: 65001}]",
        ),
        "targets[0]",
        "duplicate peer name",
    ),
    ("empty targets", "version: 1\ntargets: []\n", "targets", "at least 1"),
    (
        "no peers",
        GOOD.replace("peers: [{name: nva1, ip: 10.0.1.6, asn: 65001}]", "peers: []"),
        "targets[0].peers",
        "at least 1",
    ),
    (
        "both firewall forms",
        GOOD.replace("{name: fw}", "{name: fw, private_ip: 10.0.3.4}"),
        "targets[0].firewall",
        "exactly one",
    ),
    (
        "vpn with default route",
        GOOD.replace("firewall: {name: fw}", "firewall: {name: fw}\n    gateways: [{name: g, type: Vpn}]"),
        "targets[0]",
        "128.0.0.0/1",
    ),
    (
        "agent without token",
        GOOD.replace("asn: 65001}", "asn: 65001, agent_url: 'https://10.0.1.6:8443'}"),
        "targets[0].peers[0]",
        "token_setting",
    ),
    ("wrong version", GOOD.replace("version: 1", "version: 2"), "version", "1"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_document_names_file_path_and_expectation(text: str, path: str, fragment: str) -> None:
    found = problems(text)
    assert any(p == path and fragment in m for p, m in found), found


def test_yaml_syntax_error_names_line() -> None:
    found = problems("version: 1\ntargets: [\n  - name: x\n", "broken.yaml")
    assert len(found) == 1
    assert "invalid YAML at line" in found[0][1]


def test_json_syntax_error_names_line() -> None:
    found = problems('{"version": 1,\n "targets": [}', "broken.json")
    assert "invalid JSON at line 2" in found[0][1]


def test_document_that_is_not_a_mapping() -> None:
    assert problems("- a\n- b\n")[0][1].startswith("the document must be a mapping")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DesiredStateError, match="cannot read file"):
        desired.load(tmp_path / "missing.yaml")
