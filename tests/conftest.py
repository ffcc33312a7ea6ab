"""Test-wide fixtures: each local server has its own fixture module under tests/fixtures.

Property tests (hypothesis) always run with a known seed, so any failure can be replayed: the
seed is `--hypothesis-seed` if given, else `HYPOTHESIS_SEED`, else a fixed one in CI (`CI` set)
and a fresh random one on a developer's machine (more exploration). The seed is printed in the
header and again beside every failing test.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator

import pytest
from hypothesis import settings

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.azurite",
    "tests.fixtures.frr",
    "tests.fixtures.webhook",
    "tests.fixtures.function_host",
]

CI_SEED = 20261202


@pytest.hookimpl(tryfirst=True)  # before hypothesis' own plugin reads the option
def pytest_configure(config: pytest.Config) -> None:
    # Always print the exact failing example as a @reproduce_failure line.
    settings.register_profile("replayable", settings.get_profile("default"), print_blob=True)
    settings.load_profile("replayable")
    if config.getoption("hypothesis_seed", default=None) is None:
        chosen = os.environ.get("HYPOTHESIS_SEED") or (
            str(CI_SEED) if os.environ.get("CI") else str(random.SystemRandom().randrange(2**32))
        )
        config.option.hypothesis_seed = chosen


def _seed(config: pytest.Config) -> str:
    return str(config.getoption("hypothesis_seed", default=None))


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis seed: {_seed(config)} (replay: --hypothesis-seed={_seed(config)} or HYPOTHESIS_SEED)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        seed = _seed(item.config)
        report.sections.append(
            (
                "hypothesis seed",
                f"seed {seed}: re-run the same pytest command with --hypothesis-seed={seed} (hypothesis also "
                "draws on the constants of the modules a run imports, so keep the same selection), or add "
                "the @reproduce_failure line above to replay this one example alone",
            )
        )
