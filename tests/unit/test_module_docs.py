"""The house map stays true: every module opens with what it owns and what it must not do, and the
README's module table ("Layout") names every module of the tree, and only files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("reconciler", "emulator", "localenv", "nva_agent", "bench", "scripts")
DOCUMENTED = ("reconciler", "emulator", "localenv", "nva_agent")  # the modules held to the opening rule
ENTRY = ("__init__.py", "__main__.py")  # a package's row covers them
NOT_OURS = {"frr-reload.py"}  # FRR's own tool, named in the agent's row


def tree() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))


def layout_rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return [(first, rest) for first, rest in rows]


def named_files() -> dict[Path, str]:
    """Every `*.py` the table names -> the row it is named in. A bare name is in the row's folder
    (the first folder its first cell names)."""
    out: dict[Path, str] = {}
    for first, rest in layout_rows():
        folders = re.findall(r"`([a-z_]+)/", first)
        for name in re.findall(r"`([^`\s]+\.py)`", first + rest):
            path = ROOT / name if "/" in name else ROOT / (folders[0] if folders else "") / name
            out.setdefault(path, first.strip())
    return out


@pytest.mark.parametrize("path", [p for p in tree() if p.parts[-2] in DOCUMENTED] + [ROOT / "function_app.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))  # fmt: skip
def test_every_module_opens_with_what_it_owns_and_must_not_do(path: Path) -> None:
    doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split()).lower()
    assert re.search(r"\bowns?\b", doc), f"{path.name}: the opening docstring does not say what it owns"
    assert "must not" in doc, f"{path.name}: the opening docstring does not say what it must not do"


def test_the_readme_layout_names_every_module() -> None:
    named = named_files()
    missing = [str(p.relative_to(ROOT)) for p in tree() if p.name not in ENTRY and p not in named]
    assert missing == [], "modules the README's Layout table does not name"


def test_the_readme_layout_names_no_file_that_is_gone() -> None:
    gone = [f"{p.relative_to(ROOT)} (row {row})" for p, row in named_files().items()
            if not p.exists() and p.name not in NOT_OURS]  # fmt: skip
    assert gone == []
