"""infra/hub-access.bicep names its custom roles uniquely per tenant (the Bicep CLI is not here, so
the test evaluates the few expressions the role names use for two deployments).

Azure RBAC: a custom role's display name "must be unique at the scope of the Microsoft Entra tenant".
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BICEP = (ROOT / "infra" / "hub-access.bicep").read_text()
ROLE_FILES = {"reader": "reconciler-role.json", "fixer": "reconciler-fixer-role.json"}
TEMPLATE_VAR = re.compile(r"\$\{([^}]*)\}")


def _functions(subscription: str, group: str) -> dict[str, str]:
    return {
        "subscription().subscriptionId": subscription,
        "subscription().id": f"/subscriptions/{subscription}",
        "resourceGroup().name": group,
        "resourceGroup().id": f"/subscriptions/{subscription}/resourceGroups/{group}",
    }


def _evaluate(expr: str, subscription: str, group: str) -> str:
    """The expressions a role name may use: deployment functions, role-file names, vars, guid()."""
    expr = expr.strip()
    functions = _functions(subscription, group)
    if expr in functions:
        return functions[expr]
    if expr.endswith(".Name") and expr.removesuffix(".Name") in ROLE_FILES:
        role = json.loads((ROOT / "infra" / ROLE_FILES[expr.removesuffix(".Name")]).read_text())
        return str(role["Name"])
    call = re.fullmatch(r"guid\((.*)\)", expr)
    if call:  # deterministic like Bicep's guid(): same arguments, same GUID
        args = [_evaluate(a, subscription, group) for a in call.group(1).split(",")]
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(args)))
    var = re.search(rf"^var {re.escape(expr)} = (.+)$", BICEP, re.MULTILINE)
    if var:
        return _evaluate(var.group(1), subscription, group)
    raise AssertionError(f"the test cannot evaluate {expr!r}; extend it")


def role_names(subscription: str, group: str) -> list[str]:
    templates = re.findall(r"^\s*roleName: '(.*)'$", BICEP, re.MULTILINE)
    assert len(templates) == 2, "expected the reader and the fixer role"
    return [TEMPLATE_VAR.sub(lambda m: _evaluate(m.group(1), subscription, group), t) for t in templates]


def test_the_same_group_name_in_two_subscriptions_gets_different_role_names() -> None:
    first, second = role_names("sub-a", "rg-hub"), role_names("sub-b", "rg-hub")
    assert not set(first) & set(second), (first, second)


def test_two_hubs_in_one_subscription_get_different_role_names() -> None:
    assert not set(role_names("sub-a", "rg-hub-1")) & set(role_names("sub-a", "rg-hub-2"))


def test_role_names_are_stable_across_redeployments_and_readable() -> None:
    names = role_names("sub-a", "rg-hub")
    assert names == role_names("sub-a", "rg-hub")
    assert len(set(names)) == 2 and all("rg-hub" in n and len(n) <= 512 for n in names)


@pytest.mark.parametrize("role", ["readerRole", "fixerRole"])
def test_role_definition_ids_are_derived_from_the_group_id(role: str) -> None:
    # The definition's `name` (a GUID) is also tenant-unique; resourceGroup().id includes the subscription.
    block = BICEP.split(f"resource {role} ", 1)[1].split("\n}\n", 1)[0]
    assert re.search(r"name: guid\(resourceGroup\(\)\.id, ", block)
