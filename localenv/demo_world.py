"""The demo's world wired to the reconciler: the emulator's world file, the example desired state
with every NVA agent served by the emulator, and the app settings that point at the local servers.

Owns that wiring, shared by the demo, the local Functions host (`--demo`) and the tests. Must not
tell a story or start servers itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emulator import ArmEmulator
from localenv import ROOT
from reconciler import desired

WORLD = ROOT / "emulator" / "worlds" / "reference-lab.yaml"
EXAMPLE = ROOT / "schemas" / "examples" / "reference-lab.yaml"
TOKEN_SETTING = "NVA1_AGENT_TOKEN"


def demo_desired(emu: ArmEmulator, example: Path = EXAMPLE) -> desired.DesiredState:
    """An example document with every NVA agent served by the emulator instead of the NVA's own IP."""
    doc: dict[str, Any] = yaml.safe_load(example.read_text())
    for target in doc["targets"]:
        for peer in target["peers"]:
            peer["agent_url"] = emu.agent_url(peer["ip"])
            peer["token_setting"] = TOKEN_SETTING
    return desired.parse(doc, str(example))


def demo_env(emu: ArmEmulator, storage: str | None = None, webhook_url: str | None = None) -> dict[str, str]:
    """App settings that point the reconciler at the local emulator (and storage, and a webhook)."""
    env = {
        "ARS_ARM_ENDPOINT": emu.base_url,
        "ARS_ARM_CA_BUNDLE": emu.ca_file,
        "ARS_ARM_STATIC_TOKEN": "emulator-token",
        "ARS_ARM_POLL_INTERVAL": "0",
        "ARS_AGENT_CA_BUNDLE": emu.ca_file,
        # The demo pages at once; production keeps the 180 s BGP hold-time default.
        "ARS_ALERT_HOLD_DOWN": "0",
        "ARS_VERIFY_INTERVAL": "0.2",
        "ARS_VERIFY_TIMEOUT": "10",
    }
    if storage is not None:
        env["ARS_STORAGE_CONNECTION"] = storage
    if webhook_url is not None:
        env["ARS_TEAMS_WEBHOOK_URL"] = webhook_url
    return env
