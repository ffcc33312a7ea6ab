"""One whole reconcile pass against real BGP: the ARM emulator answers learnedRoutes from what the
stand-in route servers (real FRR) actually received, the real agent fixes FRR, the pass re-observes.

From each broken NVA config, one pass — collect via the real SDK, diff, call the agent, verify —
leaves both route servers holding 0.0.0.0/0 via 10.0.3.4 with AS path 65001; a second pass changes
nothing and says so; the operator's unrelated lines survive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from emulator import ArmEmulator, World
from localenv import scenarios
from localenv.demo import demo_env
from reconciler import desired
from reconciler.composition import Runtime
from reconciler.drift import DriftCode
from reconciler.service import reconcile
from reconciler.settings import load_settings
from reconciler.trigger import Trigger
from tests.e2e.test_agent_frr import BROKEN, _route_servers_hold_only_the_default
from tests.fixtures.emulator import REFERENCE_LAB
from tests.fixtures.frr import OPERATOR_UNRELATED_LINES, FrrLabHandle, nva_config, wait_until

pytestmark = pytest.mark.frr

TOKEN_SETTING = "LAB_NVA_AGENT_TOKEN"


@pytest.fixture
def lab_emulator(frr_lab: FrrLabHandle) -> Iterator[ArmEmulator]:
    """The reference lab, with the NVA at the lab's address and its learned routes read from real FRR."""
    world = World.load(REFERENCE_LAB)
    nva_ip = frr_lab.addr.nva_ip
    scenarios.nva_at(world, nva_ip)
    with ArmEmulator(world) as emu:
        emu.set_learned_source(nva_ip, frr_lab.learned_routes)
        yield emu


@pytest.fixture
def lab_state(frr_lab: FrrLabHandle) -> desired.DesiredState:
    doc = desired.load("schemas/examples/reference-lab.yaml").model_dump(mode="json")
    peer = doc["targets"][0]["peers"][0]
    peer.update(ip=frr_lab.addr.nva_ip, agent_url=frr_lab.agent_url, token_setting=TOKEN_SETTING, agent_lab=True)
    return desired.parse(doc)


@pytest.fixture
async def runtime(
    lab_emulator: ArmEmulator, frr_lab: FrrLabHandle, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    monkeypatch.setenv(TOKEN_SETTING, frr_lab.agent_token)
    env = demo_env(lab_emulator)
    env.update({"ARS_VERIFY_INTERVAL": "0.2", "ARS_VERIFY_TIMEOUT": "15", "ARS_AGENT_TIMEOUT": "30"})
    async with Runtime(load_settings(env), storage=False) as rt:
        yield rt


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_one_pass_repairs_a_broken_nva_on_real_bgp(
    frr_lab: FrrLabHandle, runtime: Runtime, lab_state: desired.DesiredState, case: str
) -> None:
    broken, seen = BROKEN[case]
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr, **broken))
    wait_until(lambda: seen(frr_lab), 10, f"the route servers to see the {case} drift")
    assert runtime.services is not None

    first = await reconcile(runtime.services, lab_state, trigger=Trigger.CLI)
    t = first.targets[0]
    assert t.drifts, "the broken config must be seen as drift"
    assert not any(d.code == DriftCode.OBSERVATION_FAILED for d in t.drifts), t.to_dict()
    assert [o.outcome for o in t.outcomes] == ["fixed"], t.to_dict()
    assert t.remaining == [], t.to_dict()
    wait_until(lambda: _route_servers_hold_only_the_default(frr_lab), 5, "both route servers to hold the route")

    second = await reconcile(runtime.services, lab_state, trigger=Trigger.CLI)
    assert second.targets[0].drifts == [] and second.targets[0].outcomes == [], second.to_dict()
    assert second.exit_code == 0

    running = {ln.strip() for ln in frr_lab.running_config().splitlines()}
    for line in OPERATOR_UNRELATED_LINES:
        assert line.strip() in running, f"operator line {line!r} lost"
