"""The import rules of the house, read from the source (every import statement, also those inside
functions, which is where a circle hides best):

- the product (`reconciler/`) never imports its local stand-ins or tooling: `localenv`, `emulator`,
  `bench`, `tests`;
- the emulator imports of the reconciler only platform facts and shared rules, never its decisions
  (an emulator sharing the logic it is there to test would hide the bugs it must catch);
- no modules import each other in a circle.

Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("reconciler", "emulator", "localenv", "nva_agent", "bench")
TOP_LEVEL = ("function_app.py",)
PRODUCT = "reconciler"
NOT_FROM_PRODUCT = ("localenv", "emulator", "bench", "tests")
# ASN rules, the route limits (in desired), the change-report signing rule.
EMULATOR_MAY_USE = {"reconciler", "reconciler.asn", "reconciler.desired", "reconciler.report_signature"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found.update({_module_name(ROOT / f): ROOT / f for f in TOP_LEVEL})
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = list(node.orelse)
        stack.extend(children)
    return out


def imports(name: str, path: Path, known: frozenset[str] = frozenset()) -> set[str]:
    """Every module name `name` imports at run time (absolute). `from pkg import mod` is an import of
    `pkg.mod` alone when `pkg.mod` is one of the `known` modules, else of `pkg`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = frozenset(mods)
    return {name: {m for m in imports(name, path, known) if m in mods and m != name} for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_scan_sees_the_imports_it_must_judge() -> None:
    # Guards the scanner: a function-level import and a relative import are both found.
    edges = graph()
    assert "reconciler.desired" in edges["reconciler.diff"]
    assert "emulator.world" in edges["emulator.derive"]
    assert "reconciler.ledger" in edges["reconciler.cli"]  # imported inside a function


def test_the_product_does_not_import_its_stand_ins_or_tooling() -> None:
    offending = {
        (name, target)
        for name, path in modules().items()
        if name.split(".")[0] == PRODUCT
        for target in imports(name, path)
        if target.split(".")[0] in NOT_FROM_PRODUCT
    }
    assert not offending, f"reconciler/ must not import {NOT_FROM_PRODUCT}: {sorted(offending)}"


def test_the_emulator_uses_only_the_reconciler_s_platform_facts_and_shared_rules() -> None:
    mods = modules()
    known = frozenset(mods)
    used = {
        (name, target)
        for name, path in mods.items()
        if name.split(".")[0] == "emulator"
        for target in imports(name, path, known)
        if target.split(".")[0] == PRODUCT and target not in EMULATOR_MAY_USE
    }
    assert not used, f"emulator/ must not import the reconciler's decisions: {sorted(used)}"


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
