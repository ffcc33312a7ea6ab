"""Azurite (the official Azure Storage emulator, from npm) as a child process on loopback.

Owns starting, waiting for and stopping one Azurite. Must not know what the tables hold.
The npm package is pinned in tools/package-lock.json; `make deps` runs `npm ci` there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from localenv import ROOT

AZURITE_BIN = ROOT / "tools" / "node_modules" / ".bin" / "azurite"

# Azurite's fixed development account; it is public and documented, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Azurite:
    """One Azurite process. Data lives in `location`, so a stop/start keeps it (like a storage outage)."""

    location: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="azurite-")))
    blob_port: int = field(default_factory=_free_port)
    queue_port: int = field(default_factory=_free_port)
    table_port: int = field(default_factory=_free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT};"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> Azurite:
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}: run `make deps` (npm ci in tools/)")
        log = open(self.location / "azurite.log", "ab")  # noqa: SIM115 - owned by the child
        # --skipApiVersionCheck: current queue/blob SDKs send an API version Azurite 3.35 rejects.
        # --disableTelemetry: otherwise Azurite tries to reach Application Insights on the internet.
        self._proc = subprocess.Popen(
            [
                str(AZURITE_BIN),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
                "--location",
                str(self.location),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(self.table_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self._proc.returncode}; see {self.location}/azurite.log")
            if all(_accepts(p) for p in (self.blob_port, self.queue_port, self.table_port)):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite did not listen within {timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def main() -> None:
    """`python -m localenv.azurite`: run Azurite on the default ports until interrupted."""
    az = Azurite(blob_port=10000, queue_port=10001, table_port=10002)
    az.start()
    print(az.connection_string, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        az.destroy()


if __name__ == "__main__":
    if os.environ.get("AZURITE_MAIN", "1") == "1":
        main()
