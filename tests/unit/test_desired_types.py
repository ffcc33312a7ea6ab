"""Strict scalar types in the desired state: what the operator wrote is what runs, never a coercion.

Found by the hostile-document property test on some seeds: `prefixes: [false]` became 0.0.0.0/32,
and `true`, `no` or a bare integer were accepted as networks or addresses.
"""

from __future__ import annotations

import json

import pytest

from reconciler import desired
from reconciler.errors import DesiredStateError

DOC = """
version: 1
targets:
  - name: hub
    subscription_id: sub-1
    resource_group: rg
    route_server: ars
    firewall: {private_ip: 10.0.3.4}
    gateways: [{name: ergw, type: ExpressRoute, onprem_peers: [10.0.0.12]}]
    peers: [{name: nva1, ip: 10.0.1.6, asn: 65001}]
    subnets: [{vnet: v, subnet: s, routes: [{prefix: 0.0.0.0/0, next_hop_type: Internet}]}]
"""


def refused(old: str, new: str, source: str = "desired.yaml") -> list[tuple[str, str]]:
    with pytest.raises(DesiredStateError) as info:
        desired.loads(DOC.replace(old, new, 1), source)
    assert all(line.startswith(f"{source}: ") for line in str(info.value).splitlines())
    return info.value.problems


WRONG_TYPES = [
    ("prefix false", "ars\n", "ars\n    prefixes: [false]\n", "targets[0].prefixes[0]", "the boolean false"),
    ("prefix true", "ars\n", "ars\n    prefixes: [true]\n", "targets[0].prefixes[0]", "the boolean true"),
    ("prefix integer", "ars\n", "ars\n    prefixes: [167772160]\n", "targets[0].prefixes[0]", "the number"),
    ("prefix without length", "ars\n", "ars\n    prefixes: [10.0.0.0]\n", "targets[0].prefixes[0]", "needs a length"),
    ("peer ip integer", "ip: 10.0.1.6", "ip: 167772166", "targets[0].peers[0].ip", "the number 167772166"),
    ("peer ip boolean", "ip: 10.0.1.6", "ip: false", "targets[0].peers[0].ip", "the boolean false"),
    ("firewall ip integer", "private_ip: 10.0.3.4", "private_ip: 1", "targets[0].firewall.private_ip", "the number"),
    ("onprem peer integer", "onprem_peers: [10.0.0.12]", "onprem_peers: [3]", "targets[0].gateways[0].onprem_peers[0]", "the number"),
    ("route prefix false", "prefix: 0.0.0.0/0", "prefix: false", "targets[0].subnets[0].routes[0].prefix", "the boolean"),
    ("asn boolean", "asn: 65001", "asn: true", "targets[0].peers[0].asn", "valid integer"),
    ("asn text", "asn: 65001", "asn: '65001'", "targets[0].peers[0].asn", "valid integer"),
    ("asn float", "asn: 65001", "asn: 65001.0", "targets[0].peers[0].asn", "valid integer"),
    ("version true", "version: 1", "version: true", "version", "the boolean true"),
    ("flag as text", "ars\n", "ars\n    suspend: 'true'\n", "targets[0].suspend", "valid boolean"),
    ("flag as number", "ars\n", "ars\n    branch_to_branch: 1\n", "targets[0].branch_to_branch", "valid boolean"),
    ("budget as text", "ars\n", "ars\n    policy: {action_budget: '5'}\n", "targets[0].policy.action_budget", "valid integer"),
    (
        "window as number",
        "ars\n",
        "ars\n    maintenance: [{start: 0, end: 2026-11-25T23:00:00Z}]\n",
        "targets[0].maintenance[0].start",
        "the number 0",
    ),
]


@pytest.mark.parametrize(("old", "new", "path", "fragment"), [w[1:] for w in WRONG_TYPES], ids=[w[0] for w in WRONG_TYPES])
def test_a_wrong_typed_scalar_is_refused_naming_its_path(old: str, new: str, path: str, fragment: str) -> None:
    found = refused(old, new)
    assert any(p == path and fragment in m for p, m in found), found


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "NO", "On", "OFF"])
def test_a_yaml_1_1_boolean_is_refused_with_a_clear_message(word: str) -> None:
    found = refused("ars\n", f"ars\n    branch_to_branch: {word}\n", "fleet.yaml")
    assert found == [
        (
            "targets[0].branch_to_branch",
            f"`{word}` is a YAML 1.1 boolean here but text in YAML 1.2 and JSON; "
            f"write true or false, or quote it ('{word}') if you mean the text",
        )
    ]


def test_a_yaml_1_1_boolean_inside_a_list_names_its_index() -> None:
    found = refused("ars\n", "ars\n    prefixes: [0.0.0.0/1, no]\n")
    assert [p for p, _ in found] == ["targets[0].prefixes[1]"]


def test_a_yaml_1_1_base_60_number_is_refused() -> None:
    found = refused("asn: 65001", "asn: 1:05")
    assert found[0][0] == "targets[0].peers[0].asn" and "base-60" in found[0][1]


def test_true_false_and_quoted_words_are_still_fine() -> None:
    text = DOC.replace("ars\n", "ars\n    branch_to_branch: false\n    suspend: true\n", 1).replace(
        "subnet: s,", "subnet: 'no',"
    )
    t = desired.loads(text, "d.yaml").targets[0]
    assert (t.branch_to_branch, t.suspend, t.subnets[0].subnet) == (False, True, "no")


def test_json_documents_get_the_same_strict_types() -> None:
    import yaml

    doc = yaml.safe_load(DOC)
    doc["targets"][0]["prefixes"] = [False]
    with pytest.raises(DesiredStateError, match=r"targets\[0\]\.prefixes\[0\]: expected an IPv4 prefix as text"):
        desired.loads(json.dumps(doc), "d.json")
