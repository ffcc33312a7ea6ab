"""Test-wide fixtures: each local server has its own fixture module under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.azurite",
    "tests.fixtures.frr",
    "tests.fixtures.webhook",
]
