"""infra/status-signin.bicep puts only the status page behind Entra sign-in: every machine route of
function_app, and the Functions runtime's own webhooks (Event Grid delivery), stay reachable with
their key alone (the Bicep CLI is not here: text checks).

Easy Auth's `excludedPaths` match a path as written; a sub-path needs a `/*` wildcard entry
(`/folder/subfolder/*`, the App Service product team's answer in MicrosoftDocs/azure-docs#86514).
"""

from __future__ import annotations

import re
from pathlib import Path

import function_app
from localenv.host import functions, trigger

ROOT = Path(__file__).resolve().parents[2]
BICEP = (ROOT / "infra" / "status-signin.bicep").read_text()
BEHIND_SIGNIN = {"status", "static/{name}"}  # what on-call opens in a browser


def excluded() -> list[str]:
    block = BICEP[BICEP.index("excludedPaths: [") : BICEP.index("]", BICEP.index("excludedPaths: ["))]
    return re.findall(r"'([^']+)'", block)


def is_excluded(path: str) -> bool:
    return any(path == e or (e.endswith("/*") and path.startswith(e[:-1])) for e in excluded())


def concrete(route: str) -> str:
    return "/api/" + re.sub(r"\{[^}]+\}", "x1", route)


def test_every_machine_route_is_excluded_from_sign_in() -> None:
    routes = [b["route"] for f in functions(function_app.app).values() if (b := trigger(f))["type"] == "httpTrigger"]
    machine = [r for r in routes if r not in BEHIND_SIGNIN]
    assert machine and len(machine) + len(BEHIND_SIGNIN) == len(routes)
    assert [r for r in machine if not is_excluded(concrete(r))] == []  # agents, probes, scripts keep working
    assert not any(is_excluded(concrete(r)) for r in BEHIND_SIGNIN)  # the page itself needs sign-in


def test_event_grid_delivery_and_the_admin_api_are_excluded() -> None:
    # The Event Grid trigger's webhook (Microsoft Learn, "Azure Event Grid trigger for Azure Functions").
    assert is_excluded("/runtime/webhooks/eventgrid")
    assert is_excluded("/admin/host/status")
