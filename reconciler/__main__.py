"""`python -m reconciler`: the operator CLI (see reconciler/cli.py)."""

from reconciler.cli import run

run()
