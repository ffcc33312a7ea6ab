"""Settings are read in one place, once: `reconciler/settings.py` is the only reader of the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from reconciler.composition import Worker
from reconciler.errors import ConfigurationError
from reconciler.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = []
    # function_app.py too: a trigger file that reads os.environ reads it apart from the checked settings.
    for path in [*sorted((ROOT / "reconciler").glob("*.py")), ROOT / "function_app.py"]:
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and (
                isinstance(node.value, ast.Name) and node.value.id == "os"
            ):
                readers.append(f"{path.name}:{node.lineno}")
    assert readers == []


def test_an_agent_token_is_read_with_the_other_settings_not_at_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVA9_AGENT_TOKEN", "at-load")
    settings = load_settings()
    monkeypatch.setenv("NVA9_AGENT_TOKEN", "changed-later")
    monkeypatch.setenv("NVA8_AGENT_TOKEN", "set-later")
    assert settings.secret("NVA9_AGENT_TOKEN") == "at-load"
    assert settings.secret("NVA8_AGENT_TOKEN") is None


def test_explicit_settings_override_the_environment_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVA9_AGENT_TOKEN", "from-process")
    assert load_settings({"NVA9_AGENT_TOKEN": "given"}).secret("NVA9_AGENT_TOKEN") == "given"
    monkeypatch.setenv("NVA7_AGENT_TOKEN", "")
    assert load_settings().secret("NVA7_AGENT_TOKEN") is None


def test_fanout_needs_the_storage_setting_by_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARS_STORAGE_CONNECTION", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("ARS_FANOUT", "true")
    with pytest.raises(ConfigurationError, match="ARS_STORAGE_CONNECTION"):
        Worker.from_environment(ROOT)
    monkeypatch.setenv("ARS_STORAGE_CONNECTION", "UseDevelopmentStorage=true")
    assert Worker.from_environment(ROOT).settings.fanout
