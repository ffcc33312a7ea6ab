"""Local stand-ins for cloud services that the demo and the tests start and stop themselves.

Owns process management for those servers, and `ROOT` (the checkout: host.json, tools/, schemas/,
emulator/worlds/) for every module here. Must not know anything about reconciling.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
