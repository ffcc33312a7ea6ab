"""The operator CLI as a subprocess against the ARM emulator: exit codes, table, --json, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emulator import ArmEmulator
from localenv import scenarios
from localenv.demo import TOKEN_SETTING, demo_desired

ROOT = Path(__file__).resolve().parents[2]


def cli(emu: ArmEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ARS_ARM_ENDPOINT": emu.base_url,
        "ARS_ARM_CA_BUNDLE": emu.ca_file,
        "ARS_ARM_STATIC_TOKEN": "t",
        "ARS_ARM_POLL_INTERVAL": "0",
        "ARS_ARM_RETRY_BACKOFF": "0.01",
        "ARS_AGENT_CA_BUNDLE": emu.ca_file,
        TOKEN_SETTING: emu.world.nva(scenarios.NVA_IP).agent_token,
    }
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def doc(emulator: ArmEmulator, tmp_path: Path) -> Path:
    path = tmp_path / "desired.yaml"
    path.write_text(yaml.safe_dump(demo_desired(emulator).model_dump(mode="json")))
    return path


def test_plan_on_healthy_lab_exits_0(emulator: ArmEmulator, doc: Path) -> None:
    res = cli(emulator, "plan", str(doc))
    assert res.returncode == 0, res.stderr
    assert "no drift" in res.stdout


def test_plan_with_drift_exits_2_and_changes_nothing(emulator: ArmEmulator, doc: Path) -> None:
    scenarios.firewall_redeployed(emulator)
    res = cli(emulator, "plan", str(doc), "--json")
    assert res.returncode == 2, res.stderr
    report = json.loads(res.stdout)
    codes = {d["code"] for d in report["targets"][0]["drifts"]}
    assert "ROUTE_NEXT_HOP_WRONG" in codes
    assert report["targets"][0]["plan"]["steps"] == ["agent_intent nva1: originate 0.0.0.0/0 via 10.0.3.5"]
    assert not any(r.op == "agent.intent" for r in emulator.requests)


def test_plan_table_names_codes_and_the_plan(emulator: ArmEmulator, doc: Path) -> None:
    scenarios.branch_to_branch_off(emulator)
    res = cli(emulator, "plan", str(doc))
    assert res.returncode == 2
    assert "BRANCH_TO_BRANCH_DISABLED" in res.stdout
    assert "left alone (policy: Azure-side writes are off" in res.stdout


def test_bad_document_exits_1_with_file_and_path_and_reads_nothing(emulator: ArmEmulator, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "schemas/examples/reference-lab.yaml").read_text().replace("asn: 65001", "asn: 65515"))
    res = cli(emulator, "plan", str(bad))
    assert res.returncode == 1
    assert res.stderr.startswith(f"error: {bad}: targets[0].peers[0].asn: ASN 65515")
    assert "Traceback" not in res.stderr
    assert emulator.requests == []


def test_validate_json(emulator: ArmEmulator) -> None:
    res = cli(emulator, "validate", "schemas/examples/two-targets.yaml", "--json")
    assert res.returncode == 0
    assert json.loads(res.stdout) == {
        "file": "schemas/examples/two-targets.yaml",
        "valid": True,
        "targets": ["hub-weu", "hub2-vpn"],
    }


def test_unknown_target_is_an_error(emulator: ArmEmulator, doc: Path) -> None:
    res = cli(emulator, "plan", str(doc), "--target", "nope")
    assert res.returncode == 1
    assert "unknown target 'nope'" in res.stderr


def test_bad_setting_is_named_in_one_line(emulator: ArmEmulator, doc: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", str(doc)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ARS_ARM_CONCURRENCY": "lots"},
    )
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0
    assert "ARS_ARM_CONCURRENCY" in res.stderr
