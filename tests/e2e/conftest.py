"""Fixtures the end-to-end suites share (tests/fixtures holds one module per local server).

The e2e suites that use the `emulator` fixture run over the two-target fleet world; a suite asks
for `settled` (via `pytestmark`) so every case ends with the emulated world quiet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator import ArmEmulator
from tests.e2e.harness import settle
from tests.fixtures.emulator import TWO_TARGETS


@pytest.fixture
def emulator_world_path() -> Path:
    """The fleet of two hubs (hub-weu over ExpressRoute, hub-neu over VPN) every e2e suite drives."""
    return TWO_TARGETS


@pytest.fixture
async def settled(emulator: ArmEmulator) -> AsyncIterator[None]:
    """After the case: wait until no long-running operation is left in the emulated world."""
    yield
    await settle(emulator)
