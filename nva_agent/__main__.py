"""`python -m nva_agent`: start the agent (uvicorn), or write its OpenAPI document.

Owns the command line and the server's wiring (TLS/mTLS, connection limits, SIGHUP); settings
come from the environment (nva_agent.settings), which refuses an unsafe start. It must not hold
rules of the agent itself (those are app.py's and intent.py's).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import socket
import ssl
import sys
from pathlib import Path

import uvicorn

from nva_agent.app import Sources, create_app, openapi_json
from nva_agent.connections import guarded_protocol
from nva_agent.settings import AgentSettings, SettingsError, check_exposure

EPILOG = """\
Settings are environment variables (every one, with its default: nva_agent/settings.py):
  NVA_AGENT_TOKEN_FILE     root-owned, chmod 600: the current token on line 1 and, while rotating,
                           the next on line 2 (both accepted); at least 32 random bytes
  NVA_AGENT_POLICY_FILE    the local policy (default /etc/nva-agent/policy.yaml): neighbours,
                           prefixes, next hops and local AS an intent may name; required
  NVA_AGENT_HOST, _PORT    where to listen (plain HTTP only on loopback)
  NVA_AGENT_TLS_CERT, _KEY HTTPS; with NVA_AGENT_TLS_CLIENT_CA: mutual TLS, only clients with a
                           certificate from that file (the reconciler's, pinned) get past the handshake
  NVA_AGENT_REPORT_URL, NVA_AGENT_REPORT_IP
                           report FRR changes the agent did not make to the reconciler
                           (https://.../api/agent/changes?code=<function key>), signed with a key
                           derived from the token
  NVA_AGENT_READ_TIMEOUT, NVA_AGENT_MAX_CONNECTIONS, NVA_AGENT_MAX_CONNECTIONS_PER_CLIENT
                           limits against slow or greedy clients
SIGHUP (systemctl reload) re-reads the token and policy files; so does any change to them.
Exit code 2 and one line saying why on an unsafe start (weak token, no valid policy file, plain
HTTP on a non-loopback address). Everything: README.md, "The NVA agent".
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nva_agent",
        description="The NVA agent: brings FRR's BGP config to the reconciler's intent, inside a local policy.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--write-openapi", metavar="PATH", type=Path, help="write the OpenAPI JSON and exit")
    parser.add_argument("--host", help="overrides NVA_AGENT_HOST")
    parser.add_argument("--port", type=int, help="overrides NVA_AGENT_PORT")
    parser.add_argument(
        "--listen-fd",
        type=int,
        help="serve on an inherited listening socket (the lab passes one across namespaces)",
    )
    parser.add_argument(
        "--lab",
        action="store_true",
        help="lab only: start without a policy file and allow plain HTTP on any address",
    )
    args = parser.parse_args(argv)

    if args.write_openapi:
        # the schema depends on neither the token nor the policy
        app = create_app(AgentSettings(token="openapi-only-placeholder", lab=True))
        args.write_openapi.write_text(openapi_json(app))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request line at INFO, and a change report's URL carries the function key
    # (`?code=`): a secret, never logged. Its warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = AgentSettings.from_env(lab=args.lab)
        sock = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
        host = args.host or settings.host
        check_exposure(sock.getsockname()[0] if sock is not None else host, settings)
    except SettingsError as exc:
        print(f"nva_agent: {exc}", file=sys.stderr)
        return 2
    if settings.lab:
        logging.getLogger("nva_agent").warning("--lab: no policy file required, plain HTTP allowed; never on an NVA")
    sources = Sources(settings)
    config = uvicorn.Config(
        create_app(settings, sources=sources),
        host=host,
        port=args.port if args.port is not None else settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        # mutual TLS: the handshake fails unless the client shows a certificate from this file
        ssl_ca_certs=str(settings.tls_client_ca) if settings.tls_client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca else ssl.CERT_NONE,
        http=guarded_protocol(settings.read_timeout, settings.max_connections, settings.max_connections_per_client),
        timeout_keep_alive=5,
        log_level="info",
        # the access log shows method, path and status; headers (the token) are never logged
        access_log=True,
        server_header=False,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP re-reads the token and policy files (they are also re-read when they change)
        loop.add_signal_handler(signal.SIGHUP, sources.reload)
        if settings.tls:
            # uvicorn has no setting for it: a TLS handshake that never completes would hold its
            # connection for asyncio's default 60 s; bound it by the same read deadline instead.
            create = loop.create_server
            loop.create_server = functools.partial(create, ssl_handshake_timeout=settings.read_timeout)  # type: ignore[method-assign]
        await server.serve(sockets=[sock] if sock is not None else None)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
