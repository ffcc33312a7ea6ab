"""The FRR adapter: vtysh and frr-reload.py as subprocesses, argument lists only, never a shell.

Owns how the agent talks to FRR (paths, timeouts, exit codes, JSON decoding) and turns every
failure into FrrError. Must not know the intent, the HTTP contract or what the config means.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nva_agent.models import HealthReason


class FrrError(Exception):
    """FRR or vtysh could not be reached or failed; the agent answers 503.

    The message (for the authenticated endpoints and the log) may name commands and paths;
    `reason` is the fixed code the unauthenticated /v1/health may show.
    """

    def __init__(self, message: str, reason: HealthReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason or _classify(message)


def _classify(message: str) -> HealthReason:
    text = message.lower()
    if "failed to connect" in text:  # vtysh: "Exiting: failed to connect to any daemons."
        return HealthReason.VTY_UNREACHABLE
    if "is not running" in text:  # vtysh: "% bgpd is not running"
        return HealthReason.BGPD_NOT_RUNNING
    return HealthReason.VTYSH_FAILED


class ConfigRejected(Exception):
    """`vtysh -C` refused a rendered config: nothing was applied."""


@dataclass(frozen=True)
class FrrPaths:
    """Where FRR lives on this machine; the lab points these into its own folders."""

    vtysh: str = "vtysh"
    config_dir: Path = Path("/etc/frr")
    """Holds frr.conf and vtysh.conf; frr.conf is rewritten on every applied change."""
    vty_socket: Path = Path("/var/run/frr")
    rundir: Path = Path("/var/run/frr")
    """frr-reload.py writes its temporary files here."""
    frr_reload: Path = Path("/usr/lib/frr/frr-reload.py")
    python: str = "/usr/bin/python3"
    """frr-reload.py is run by the system Python it was packaged for, not the agent's venv."""
    timeout: float = 30.0


class FrrPort(Protocol):
    """What the agent needs from FRR; a fake can stand in for it in unit tests."""

    async def show_json(self, command: str) -> dict[str, Any]: ...
    async def running_config(self) -> str: ...
    async def check(self, config: str) -> None: ...
    async def reload(self, config: str) -> None: ...
    async def soft_out(self) -> None: ...


class Frr:
    """FrrPort over the real vtysh / frr-reload.py."""

    def __init__(self, paths: FrrPaths) -> None:
        self.paths = paths

    def _vtysh(self, *extra: str) -> list[str]:
        p = self.paths
        return [p.vtysh, "--config_dir", str(p.config_dir), "--vty_socket", str(p.vty_socket), *extra]

    async def _run(self, args: list[str], what: str) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise FrrError(f"{what}: cannot run {args[0]}: {exc.strerror or exc}", HealthReason.VTYSH_MISSING) from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.paths.timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise FrrError(f"{what}: no answer within {self.paths.timeout:.0f} s", HealthReason.VTYSH_TIMEOUT) from exc
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def _vtysh_c(self, *commands: str) -> str:
        args = self._vtysh()
        for c in commands:
            args += ["-c", c]
        what = f"vtysh -c {commands[-1]!r}"
        rc, out, err = await self._run(args, what)
        if rc != 0:
            raise FrrError(f"{what} exited {rc}: {_first_line(err, out)}")
        return out

    async def show_json(self, command: str) -> dict[str, Any]:
        out = await self._vtysh_c(command)
        # bgpd down while zebra is up: vtysh prints a notice and exits 0 with no JSON
        try:
            data = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError as exc:
            raise FrrError(f"vtysh -c {command!r} did not return JSON: {_first_line(out)}") from exc
        if not isinstance(data, dict):
            raise FrrError(f"vtysh -c {command!r} returned {type(data).__name__}, not an object")
        return data

    async def running_config(self) -> str:
        return await self._vtysh_c("show running-config")

    async def check(self, config: str) -> None:
        path = self._write_temp(config, "candidate-")
        try:
            rc, out, err = await self._run(self._vtysh("-C", "-f", str(path)), "vtysh -C")
        finally:
            path.unlink(missing_ok=True)
        if rc != 0:
            raise ConfigRejected(f"vtysh -C exited {rc}: {_first_line(err, out)}")

    async def reload(self, config: str) -> None:
        p = self.paths
        # frr-reload.py runs `vtysh write` (overwriting <confdir>/frr.conf) unless the file it is
        # given is exactly <confdir>/frr.conf (frr-lab.md pitfall 9): so render into that file.
        target = p.config_dir / "frr.conf"
        tmp = self._write_temp(config, ".frr.conf-", directory=p.config_dir)
        if target.exists():  # daemons run as user frr and re-read this file when restarted
            st = target.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
        args = [
            p.python,
            str(p.frr_reload),
            "--reload",
            "--stdout",
            "--confdir",
            str(p.config_dir),
            "--vty_socket",
            str(p.vty_socket),
            "--rundir",
            str(p.rundir),
            "--log-level",
            "warning",
            str(target),
        ]
        rc, out, err = await self._run(args, "frr-reload.py --reload")
        if rc != 0:
            raise FrrError(f"frr-reload.py exited {rc}: {_first_line(err, out)}")

    async def soft_out(self) -> None:
        # Without this, a route-map edit reaches the peers only when the route-map delay
        # timer fires (5 s); a soft clear re-sends at once and keeps the sessions up.
        await self._vtysh_c("clear bgp ipv4 unicast * soft out")

    def _write_temp(self, text: str, prefix: str, directory: Path | None = None) -> Path:
        d = directory or self.paths.rundir
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".conf", dir=d)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(name, 0o640)
        return Path(name)


def _first_line(*texts: str) -> str:
    for t in texts:
        for line in t.splitlines():
            if line.strip():
                return line.strip()[:300]
    return "(no output)"
