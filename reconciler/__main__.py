"""`python -m reconciler`: the operator CLI (see reconciler/cli.py).

Owns nothing but the entry point; it must not hold logic (reconciler.cli has it)."""

from reconciler.cli import run

run()
