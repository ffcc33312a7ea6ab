"""The reconciler's exception tree, split by what the caller does next.

    ReconcilerError
    ├── ConfigurationError   refuse to start / refuse the document; a human must change input
    │   └── DesiredStateError  (file, path-in-document, what is expected)
    ├── TransientError       retry on a later pass (timeouts, 429 after retries, 5xx, 409 busy)
    │   └── LockedError        another pass holds the target's lease
    └── PermanentError       alert and stop retrying (401/403, 404 of a required resource, bad contract)

Owns that tree (and `first_line`, how an error reads in one line); it must not know which SDK
raised. Adapters translate SDK/HTTP errors into these with `raise ... from exc`. A failed *step* is a
recorded outcome, not an exception that kills the pass.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(ReconcilerError):
    """Input or settings are wrong; nothing runs until a human fixes them."""


class DesiredStateError(ConfigurationError):
    """A desired-state document is invalid. `problems` are (path-in-document, message) pairs."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {path}: {msg}" if path else f"{file}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class TransientError(ReconcilerError):
    """Worth retrying on a later pass."""


class LockedError(TransientError):
    """Another pass holds the one-writer lease for this target."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"target {target!r} is locked by another pass")


class PermanentError(ReconcilerError):
    """Retrying will not help; alert a human."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception in one short line for a log or a card: the first line of its message (SDK errors
    carry pages of detail below it), or its type's name when it has no message."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
