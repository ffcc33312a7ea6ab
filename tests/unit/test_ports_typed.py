"""The service's ports, `Services` and the `Runtime` are typed: no `Any` for mypy to wave through.

A free-typed port once hid a crash (a step outcome outside the ledger's enum); mypy --strict only
guards what is annotated, so this test keeps `Any` out of those annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLASSES = {
    "reconciler/service.py": {"ArmPort", "AgentPort", "AgentsPort", "LedgerPort", "LeasesPort", "AlertsPort", "Services"},
    "reconciler/composition.py": {"Runtime", "Worker", "AgentDirectory"},
}
# The functions that build the ports or run a pass through them (a pass's trigger is a Trigger).
FUNCTIONS = {
    "reconciler/service.py": {"reconcile", "reconcile_target", "trace_targets"},
    "reconciler/composition.py": {"build_arm", "_activity_log"},
    "reconciler/cli.py": {"_pass"},
    "reconciler/status_page.py": {"gather"},
}


def annotations(scope: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(scope):
        if isinstance(node, ast.AnnAssign):
            out.append((node.lineno, ast.unparse(node.annotation)))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            out += [(a.lineno, ast.unparse(a.annotation)) for a in args if a.annotation is not None]
            if node.returns is not None:
                out.append((node.lineno, ast.unparse(node.returns)))
    return out


@pytest.mark.parametrize("module", sorted(CLASSES))
def test_ports_and_runtime_have_no_any(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    found = {c.name: c for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name in CLASSES[module]}
    assert set(found) == CLASSES[module]
    loose = [(name, line, a) for name, c in found.items() for line, a in annotations(c) if "Any" in a]
    assert loose == []


@pytest.mark.parametrize("module", sorted(FUNCTIONS))
def test_pass_functions_have_no_any(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    found = {
        f.name: f
        for f in tree.body
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name in FUNCTIONS[module]
    }
    assert set(found) == FUNCTIONS[module]
    loose = [(name, line, a) for name, f in found.items() for line, a in annotations(f) if "Any" in a]
    assert loose == []
