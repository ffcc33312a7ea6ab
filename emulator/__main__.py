"""CLI: serve a world file over HTTPS until SIGTERM/SIGINT (the demo script starts it this way).

Prints `base_url=...` and `ca_file=...` on stdout (one per line, flushed) once it is listening.
Owns the command line only; it must not know the reconciler.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from .server import ArmEmulator
from .world import World, WorldError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description="Local ARM emulator (HTTPS).")
    parser.add_argument("--world", required=True, help="world file (.yaml/.yml/.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--certs-dir", help="keep the CA/leaf here (reused if present); default: temporary")
    parser.add_argument("--page-size", type=int, default=2)
    parser.add_argument("--lro-polls", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        world = World.load(args.world)
    except (OSError, WorldError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu = ArmEmulator(
        world,
        host=args.host,
        port=args.port,
        page_size=args.page_size,
        lro_polls=args.lro_polls,
        certs_dir=args.certs_dir,
    )
    with emu:
        print(f"base_url={emu.base_url}", flush=True)
        print(f"ca_file={emu.ca_file}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
