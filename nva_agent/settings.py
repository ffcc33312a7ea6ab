"""The agent's settings: one typed value, read from the environment once at start-up.

Owns the names and defaults of the NVA_AGENT_* variables and the start-up refusals (weak token,
no policy file, plain HTTP on a non-loopback address); must not know FastAPI or FRR internals
(it only hands FrrPaths to the adapter).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nva_agent import policy, tokens
from nva_agent.files import FileProblem, read_trusted
from nva_agent.frr import FrrPaths
from nva_agent.intent import Timing


class SettingsError(Exception):
    """The agent cannot start with these settings; the message says which variable is wrong."""


@dataclass(frozen=True)
class AgentSettings:
    token: str = field(default="", repr=False)
    """NVA_AGENT_TOKEN: one static token (no rotation without a restart); prefer the file."""
    token_file: Path | None = None
    """NVA_AGENT_TOKEN_FILE: root-owned, the current token on line 1 and, while rotating, the next
    on line 2; re-read when it changes or on SIGHUP. Either this or NVA_AGENT_TOKEN."""
    policy_file: Path = Path(policy.DEFAULT_PATH)
    """NVA_AGENT_POLICY_FILE: the local policy (nva_agent.policy); re-read when it changes or on SIGHUP."""
    lab: bool = False
    """`--lab` only (never from the environment): no policy file needed, plain HTTP on any address."""
    host: str = "127.0.0.1"
    """NVA_AGENT_HOST; on an NVA, its private IP so the reconciler can reach it (then TLS is required)."""
    port: int = 8179
    """NVA_AGENT_PORT."""
    tls_cert: Path | None = None
    """NVA_AGENT_TLS_CERT; with NVA_AGENT_TLS_KEY serves HTTPS."""
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """NVA_AGENT_TLS_CLIENT_CA: mutual TLS. A PEM file of the client certificates (or their CA) the
    agent accepts; with the reconciler's own self-signed certificate as the only entry the agent
    pins that one certificate. Clients without it fail the TLS handshake, before any HTTP."""
    docs: bool = False
    """NVA_AGENT_DOCS=1 serves /docs, /redoc and /openapi.json (off: they need no token)."""
    max_body_bytes: int = 16 * 1024
    """NVA_AGENT_MAX_BODY_BYTES; larger request bodies get 413 before they are parsed."""
    read_timeout: float = 5.0
    """NVA_AGENT_READ_TIMEOUT: seconds a client has to send a whole request (headers and body),
    from connecting or from the previous response; then the connection is closed (slowloris)."""
    max_connections: int = 64
    """NVA_AGENT_MAX_CONNECTIONS: open connections in all; more are closed at once."""
    max_connections_per_client: int = 8
    """NVA_AGENT_MAX_CONNECTIONS_PER_CLIENT: open connections per source address, so one client
    cannot use up the total (the reconciler needs one or two)."""
    report_url: str | None = None
    """NVA_AGENT_REPORT_URL: the reconciler's `POST /api/agent/changes` (with `?code=<function key>`);
    when set, the agent reports FRR changes it did not make (nva_agent.change_reports)."""
    report_ip: str = ""
    """NVA_AGENT_REPORT_IP: this NVA's peering IP as the desired state names it (the report's nva_ip)."""
    frr: FrrPaths = field(default_factory=FrrPaths)
    """NVA_AGENT_FRR_CONFIG_DIR, _VTY_SOCKET, _RUNDIR, _VTYSH, _RELOAD, _PYTHON, _TIMEOUT."""
    timing: Timing = field(default_factory=Timing)
    """NVA_AGENT_VERIFY_TIMEOUT: seconds the read-back may take before rolling back."""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, lab: bool = False) -> AgentSettings:
        """Read and check everything the agent needs to start safely; SettingsError says what is wrong."""
        env = os.environ if env is None else env
        token, token_file = env.get("NVA_AGENT_TOKEN", ""), env.get("NVA_AGENT_TOKEN_FILE")
        if token and token_file:
            raise SettingsError("set NVA_AGENT_TOKEN or NVA_AGENT_TOKEN_FILE, not both")
        try:
            if token_file:
                tokens.parse_file(read_trusted(Path(token_file)))
            elif token:
                tokens.check_strength(token, "NVA_AGENT_TOKEN")
            else:
                raise SettingsError(
                    "set NVA_AGENT_TOKEN_FILE (or NVA_AGENT_TOKEN) to a token of 32 random bytes; " + tokens.HOW_TO_MAKE
                )
        except FileProblem as exc:
            raise SettingsError(f"NVA_AGENT_TOKEN_FILE: {exc}") from exc
        except tokens.WeakToken as exc:
            raise SettingsError(f"weak token refused: {exc}") from exc
        policy_file = Path(env.get("NVA_AGENT_POLICY_FILE", policy.DEFAULT_PATH))
        if not lab or policy_file.exists():
            try:
                policy.parse(read_trusted(policy_file))
            except (FileProblem, ValueError) as exc:
                raise SettingsError(
                    f"policy file {policy_file}: {exc}. The agent does not start without a local policy "
                    "(NVA_AGENT_POLICY_FILE; see README 'The NVA agent'); only --lab runs without one"
                ) from exc
        cert, key = env.get("NVA_AGENT_TLS_CERT"), env.get("NVA_AGENT_TLS_KEY")
        client_ca = env.get("NVA_AGENT_TLS_CLIENT_CA")
        if bool(cert) != bool(key):
            raise SettingsError("NVA_AGENT_TLS_CERT and NVA_AGENT_TLS_KEY go together")
        if client_ca and not cert:
            raise SettingsError("NVA_AGENT_TLS_CLIENT_CA (mutual TLS) needs NVA_AGENT_TLS_CERT and NVA_AGENT_TLS_KEY")
        report_url, report_ip = env.get("NVA_AGENT_REPORT_URL") or None, env.get("NVA_AGENT_REPORT_IP", "")
        if report_url and not report_ip:
            raise SettingsError("NVA_AGENT_REPORT_URL needs NVA_AGENT_REPORT_IP (this NVA's peering IP)")
        if report_url and not report_url.startswith("https://") and not lab and not _loopback_url(report_url):
            raise SettingsError(
                "NVA_AGENT_REPORT_URL must be https:// (the report carries a function key); "
                "plain http:// only to a loopback address (a local relay)"
            )
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
                token_file=Path(token_file) if token_file else None,
                policy_file=policy_file,
                lab=lab,
                host=env.get("NVA_AGENT_HOST", cls.host),
                port=int(env.get("NVA_AGENT_PORT", cls.port)),
                tls_cert=Path(cert) if cert else None,
                tls_key=Path(key) if key else None,
                tls_client_ca=Path(client_ca) if client_ca else None,
                docs=env.get("NVA_AGENT_DOCS", "") in ("1", "true", "yes"),
                max_body_bytes=int(env.get("NVA_AGENT_MAX_BODY_BYTES", cls.max_body_bytes)),
                read_timeout=float(env.get("NVA_AGENT_READ_TIMEOUT", cls.read_timeout)),
                max_connections=int(env.get("NVA_AGENT_MAX_CONNECTIONS", cls.max_connections)),
                max_connections_per_client=int(
                    env.get("NVA_AGENT_MAX_CONNECTIONS_PER_CLIENT", cls.max_connections_per_client)
                ),
                report_url=report_url,
                report_ip=report_ip,
                frr=frr,
                timing=Timing(verify_timeout=float(env.get("NVA_AGENT_VERIFY_TIMEOUT", Timing.verify_timeout))),
            )
        except ValueError as exc:
            raise SettingsError(f"a numeric NVA_AGENT_* setting is not a number: {exc}") from exc


def _loopback_url(url: str) -> bool:
    """http://127.x.x.x/...: the function key never leaves the NVA (as plain HTTP is served only on
    loopback, `check_exposure`); a relay there carries it on, the lab's relay to its host included."""
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
        return url.startswith("http://") and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(address: str, settings: AgentSettings) -> None:
    """Refuse plain HTTP on anything but loopback: the bearer token would cross the network in clear."""
    if settings.tls or settings.lab:
        return
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = address == "localhost"
    if not loopback:
        raise SettingsError(
            f"refusing to serve plain HTTP on {address}: set NVA_AGENT_TLS_CERT and NVA_AGENT_TLS_KEY "
            "(and NVA_AGENT_TLS_CLIENT_CA for mutual TLS), or bind 127.0.0.1; --lab allows it in a lab"
        )
