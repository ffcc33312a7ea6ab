"""The agent's settings: one typed value, read from the environment once at start-up.

Owns the names and defaults of the NVA_AGENT_* variables; must not know FastAPI or FRR
internals (it only hands FrrPaths to the adapter).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nva_agent.frr import FrrPaths
from nva_agent.intent import Timing


class SettingsError(Exception):
    """The agent cannot start with these settings; the message says which variable is wrong."""


@dataclass(frozen=True)
class AgentSettings:
    token: str = field(repr=False)
    """Bearer token for /v1/state and /v1/bgp/intent (NVA_AGENT_TOKEN or NVA_AGENT_TOKEN_FILE)."""
    host: str = "127.0.0.1"
    """NVA_AGENT_HOST; on an NVA, its private IP so the reconciler can reach it."""
    port: int = 8179
    """NVA_AGENT_PORT."""
    tls_cert: Path | None = None
    """NVA_AGENT_TLS_CERT; with NVA_AGENT_TLS_KEY serves HTTPS."""
    tls_key: Path | None = None
    max_body_bytes: int = 16 * 1024
    """NVA_AGENT_MAX_BODY_BYTES; larger request bodies get 413 before they are parsed."""
    frr: FrrPaths = field(default_factory=FrrPaths)
    """NVA_AGENT_FRR_CONFIG_DIR, _VTY_SOCKET, _RUNDIR, _VTYSH, _RELOAD, _PYTHON, _TIMEOUT."""
    timing: Timing = field(default_factory=Timing)
    """NVA_AGENT_VERIFY_TIMEOUT: seconds the read-back may take before rolling back."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentSettings:
        env = os.environ if env is None else env
        token = env.get("NVA_AGENT_TOKEN", "")
        if not token and env.get("NVA_AGENT_TOKEN_FILE"):
            try:
                token = Path(env["NVA_AGENT_TOKEN_FILE"]).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"NVA_AGENT_TOKEN_FILE cannot be read: {exc.strerror}") from exc
        if len(token) < 16:
            raise SettingsError("set NVA_AGENT_TOKEN or NVA_AGENT_TOKEN_FILE to a token of at least 16 characters")
        cert, key = env.get("NVA_AGENT_TLS_CERT"), env.get("NVA_AGENT_TLS_KEY")
        if bool(cert) != bool(key):
            raise SettingsError("NVA_AGENT_TLS_CERT and NVA_AGENT_TLS_KEY go together")
        d = FrrPaths()
        try:
            frr = FrrPaths(
                vtysh=env.get("NVA_AGENT_FRR_VTYSH", d.vtysh),
                config_dir=Path(env.get("NVA_AGENT_FRR_CONFIG_DIR", str(d.config_dir))),
                vty_socket=Path(env.get("NVA_AGENT_FRR_VTY_SOCKET", str(d.vty_socket))),
                rundir=Path(env.get("NVA_AGENT_FRR_RUNDIR", str(d.rundir))),
                frr_reload=Path(env.get("NVA_AGENT_FRR_RELOAD", str(d.frr_reload))),
                python=env.get("NVA_AGENT_FRR_PYTHON", d.python),
                timeout=float(env.get("NVA_AGENT_FRR_TIMEOUT", d.timeout)),
            )
            return cls(
                token=token,
                host=env.get("NVA_AGENT_HOST", cls.host),
                port=int(env.get("NVA_AGENT_PORT", cls.port)),
                tls_cert=Path(cert) if cert else None,
                tls_key=Path(key) if key else None,
                max_body_bytes=int(env.get("NVA_AGENT_MAX_BODY_BYTES", cls.max_body_bytes)),
                frr=frr,
                timing=Timing(verify_timeout=float(env.get("NVA_AGENT_VERIFY_TIMEOUT", Timing.verify_timeout))),
            )
        except ValueError as exc:
            raise SettingsError(f"a numeric NVA_AGENT_* setting is not a number: {exc}") from exc
