"""ars-reconciler: keeps an Azure Route Server + NVA + Azure Firewall design true.

The package is split into a pure core (desired, observed, drift, diff, plan, alerts) and adapters
at the edge (arm, agent_client, ledger, lease, teams). Only adapters import azure.* or httpx. It owns
the product; it must not import its local stand-ins or tooling (localenv, emulator, bench, tests).
"""
