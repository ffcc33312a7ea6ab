"""`python -m reconciler trace` against the ARM emulator: the reference lab whole, then broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from emulator import ArmEmulator
from localenv import scenarios
from localenv.demo import demo_desired
from tests.integration.test_cli import cli


@pytest.fixture
def doc(emulator: ArmEmulator, tmp_path: Path) -> Path:
    path = tmp_path / "desired.yaml"
    path.write_text(yaml.safe_dump(demo_desired(emulator).model_dump(mode="json")))
    return path


def test_trace_of_the_healthy_lab_is_whole_and_exits_0(emulator: ArmEmulator, doc: Path) -> None:
    res = cli(emulator, "trace", str(doc))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "[hub-weu] 0.0.0.0/0: OK" in res.stdout
    assert "from on-premises ergw:10.0.0.12: OK" in res.stdout
    assert "routes.learned network, nextHop, asPath [RouteServiceRole_IN_1]: 0.0.0.0/0 via 10.0.3.4 path 65001" in res.stdout


def test_trace_names_the_nva_as_root_cause_when_the_firewall_moved(emulator: ArmEmulator, doc: Path) -> None:
    scenarios.firewall_redeployed(emulator)
    res = cli(emulator, "trace", str(doc), "--json")
    assert res.returncode == 2, res.stderr
    (tr,) = json.loads(res.stdout)["traces"]
    onprem = tr["paths"][0]
    assert onprem["root_cause"] == "nva:nva1"
    verdicts = {h["id"]: h["verdict"] for h in onprem["hops"]}
    assert verdicts["route_server"] == "ok" and verdicts["nva:nva1"] == "broken"
    assert verdicts["gateway_learned:ergw"] == "broken"  # follows from the NVA, grouped under it


def test_trace_table_marks_the_root_cause(emulator: ArmEmulator, doc: Path) -> None:
    scenarios.branch_to_branch_off(emulator)
    res = cli(emulator, "trace", str(doc), "--prefix", "8.8.8.0/24")
    assert res.returncode == 2
    assert "[hub-weu] 8.8.8.0/24: BROKEN" in res.stdout
    assert "(root cause: branch_to_branch)" in res.stdout
    assert "> 5. broken   branch-to-branch (Route Server <-> gateway)  [BRANCH_TO_BRANCH_DISABLED]" in res.stdout


@pytest.mark.parametrize("args", [("--prefix", "not-a-prefix"), ("--prefix", "::/0"), ("--target", "nope")])
def test_trace_bad_input_exits_1_with_one_line(emulator: ArmEmulator, doc: Path, args: tuple[str, str]) -> None:
    res = cli(emulator, "trace", str(doc), *args)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
