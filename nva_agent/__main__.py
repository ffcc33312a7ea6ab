"""`python -m nva_agent`: start the agent (uvicorn), or write its OpenAPI document.

Owns the command line only; settings come from the environment (nva_agent.settings).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

import uvicorn

from nva_agent.app import create_app, openapi_json
from nva_agent.settings import AgentSettings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nva_agent", description="NVA agent for FRR")
    parser.add_argument("--write-openapi", metavar="PATH", type=Path, help="write the OpenAPI JSON and exit")
    parser.add_argument("--host", help="overrides NVA_AGENT_HOST")
    parser.add_argument("--port", type=int, help="overrides NVA_AGENT_PORT")
    parser.add_argument(
        "--listen-fd",
        type=int,
        help="serve on an inherited listening socket (the lab passes one across namespaces)",
    )
    args = parser.parse_args(argv)

    if args.write_openapi:
        # the schema does not depend on the token; a placeholder keeps settings valid
        app = create_app(AgentSettings(token="openapi-only-placeholder"))
        args.write_openapi.write_text(openapi_json(app))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AgentSettings.from_env()
    except SettingsError as exc:
        print(f"nva_agent: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level="info",
        # the access log shows method, path and status; headers (the token) are never logged
        access_log=True,
        server_header=False,
    )
    server = uvicorn.Server(config)
    sockets = [socket.socket(fileno=args.listen_fd)] if args.listen_fd is not None else None
    server.run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
