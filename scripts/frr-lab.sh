#!/usr/bin/env bash
# frr-lab.sh up|down|status - the real-FRR lab by hand: the NVA (AS 65001, 10.0.1.4) and two
# stand-in route servers (AS 65515, 10.0.2.4/.5) in network namespaces. The lab itself lives in
# localenv/frrlab.py (the same code the `frr_lab` pytest fixture uses); this is its CLI.
#
#   up      tear down any leftover lab of that name, build it, wait until both route servers
#           hold 0.0.0.0/0 via 10.0.3.4; on failure or timeout it tears itself down (exit != 0)
#   down    stop its daemons, delete its namespaces and folder (safe to repeat)
#   status  daemons alive and the NVA's BGP sessions, as JSON
#
# Env: FRRLAB_NAME (namespace prefix, default arsrlab), FRRLAB_TIMEOUT (seconds, default 120),
#      PYTHON (default .venv/bin/python). Needs root and Debian's frr + frr-pythontools.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in up|down|status) ;; *) echo "usage: $0 up|down|status" >&2; exit 2 ;; esac
PY="${PYTHON:-.venv/bin/python}"
# timeout sends SIGTERM, which the lab turns into a clean teardown; -k is the last resort
exec timeout -k 10 "${FRRLAB_TIMEOUT:-120}" "$PY" -m localenv.frrlab "$1" --name "${FRRLAB_NAME:-arsrlab}"
