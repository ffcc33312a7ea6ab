"""Azure Storage rules every storage adapter shares: what a failure means for the caller, and
which table names Azure accepts.

Owns the one mapping from azure-core storage errors to our error tree (ledger, retention, leases,
runs, the alert store and the fan-out queue all use it), the table names and the one encoding of
any string into a Table key (the ledger, the leases, the alert store and the event intake use
it). Must not know what is stored, how clients are built (`reconciler.storage`) or settings
(which import it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from enum import StrEnum

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from reconciler.errors import ConfigurationError, PermanentError, ReconcilerError, TransientError, first_line


def _status(exc: AzureError) -> int | None:
    return exc.status_code if isinstance(exc, HttpResponseError) else None


def _code(exc: AzureError) -> str | None:
    return getattr(exc, "error_code", None)


# What a storage failure means for the caller; the first matching row wins, anything else is
# transient (timeouts, connection errors, 5xx, 409/412 races: the next pass retries).
# 403 is permanent: Azure Storage answers it when the identity lacks a data-plane role
# (AuthorizationPermissionMismatch), the account's network rules block us (AuthorizationFailure),
# the account is disabled or a SAS expired. None heals by retrying on the next pass — a human must
# grant or open something — so it is alerted, as errors.py's tree says (401/403 → permanent).
# The ledger used to retry it for ever while the alert store gave up: now both give up.
# 400 is permanent too: the same request is just as malformed on the next pass.
STORAGE_ERRORS: tuple[tuple[Callable[[AzureError], bool], type[ReconcilerError], str], ...] = (
    (lambda e: isinstance(e, ClientAuthenticationError), PermanentError, "storage refused the credentials"),
    (
        lambda e: _status(e) == 403,
        PermanentError,
        "storage refused access (the identity's data role or the account's network rules)",
    ),
    (lambda e: _code(e) == "TableNotFound", PermanentError, "table missing, run ensure_tables()"),
    (lambda e: _status(e) == 400, PermanentError, "storage rejected the request as malformed"),
)
_TRANSIENT = "storage unreachable or failing, retry on a later pass"


def storage_error(component: str, what: str, exc: AzureError) -> ReconcilerError:
    """Our error for a storage failure of `component` (e.g. "drift ledger") doing `what`; raise it
    `from exc`."""
    kind: type[ReconcilerError] = TransientError
    meaning = _TRANSIENT
    for matches, error, text in STORAGE_ERRORS:
        if matches(exc):
            kind, meaning = error, text
            break
    return kind(f"{component}: {what}: {meaning} ({type(exc).__name__}: {first_line(exc)})")


class Table(StrEnum):
    """Every table the app makes, as the suffix after ARS_TABLE_PREFIX (`table.of(prefix)`); the
    ledger, the alert store, the event intake and retention name their tables from here."""

    DRIFT = "drift"
    HISTORY = "drifthistory"
    PASSES = "passes"
    ALERT_STATE = "alertstate"
    ALERT_OUTBOX = "alertoutbox"
    EVENTS = "events"  # reconciler.event_intake: handled events and per-target markers

    def of(self, prefix: str) -> str:
        return f"{prefix}{self.value}"


# Azure Tables: "Table names may contain only alphanumeric characters ... cannot begin with a
# numeric character ... must be from 3 to 63 characters long" (Storage REST docs, "Understanding the
# Table service data model", Table names). Every table we make is the prefix + one of these.
TABLE_SUFFIXES = tuple(t.value for t in Table)
MAX_TABLE_NAME = 63
MAX_TABLE_PREFIX = MAX_TABLE_NAME - max(len(s) for s in TABLE_SUFFIXES)
TABLE_PREFIX_PATTERN = rf"^[A-Za-z][A-Za-z0-9]{{0,{MAX_TABLE_PREFIX - 1}}}$"


def checked_table_prefix(prefix: str) -> str:
    """`prefix` when every table name made from it is one Azure accepts; else a ConfigurationError."""
    if not re.fullmatch(TABLE_PREFIX_PATTERN, prefix):
        raise ConfigurationError(
            f"table prefix {prefix!r}: use 1-{MAX_TABLE_PREFIX} letters and digits, starting with a letter"
        )
    return prefix


# Table keys (Storage REST docs, "Understanding the Table service data model"): PartitionKey and
# RowKey may not hold / \ # ? or control characters, and are at most 1 KiB.
KEY_MAX = 1024
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:=|,;@+")
_ESCAPE = "!"


def encode_key(value: str) -> str:
    """A Table Storage key for any string, reversible with decode_key.

    Keys may not hold `/ \\ # ?` or control characters (and `/` makes Azurite answer 500), so
    everything outside a small safe set, the escape `!` included, becomes `!XX` per UTF-8 byte.
    `0.0.0.0/0` becomes `0.0.0.0!2F0`. Values that would overflow the 1 KiB key limit are
    truncated and suffixed with a hash; those keys do not decode (the rows carry the plain value).
    """
    out: list[str] = []
    for ch in value:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"{_ESCAPE}{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    key = "".join(out)
    if len(key) > KEY_MAX:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"{key[: KEY_MAX - 80]}~{digest}"
    return key


def decode_key(key: str) -> str:
    """The string encode_key(value) was made from."""
    if "~" in key:
        raise ValueError(f"key {key[:40]!r}... was hashed to fit the key limit and cannot be decoded")
    raw = bytearray()
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == _ESCAPE:
            hexpair = key[i + 1 : i + 3]
            if len(hexpair) != 2 or any(c not in "0123456789ABCDEF" for c in hexpair):
                raise ValueError(f"bad escape at {i} in key {key!r}")
            raw.append(int(hexpair, 16))
            i += 3
        elif ch in _SAFE:
            raw.extend(ch.encode("ascii"))
            i += 1
        else:
            raise ValueError(f"character {ch!r} cannot appear in an encoded key")
    return raw.decode("utf-8", "surrogatepass")
