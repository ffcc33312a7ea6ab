"""One rule, one place: a storage failure means the same to every adapter, the table-prefix bound is
the same everywhere, and "blind" and an error's first line are each defined once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ServiceRequestError,
)
from pydantic import ValidationError

from reconciler import drift
from reconciler import storage_rules as storage
from reconciler.errors import ConfigurationError, PermanentError, ReconcilerError, TransientError, first_line
from reconciler.ledger import Ledger, raise_storage_error
from reconciler.outbox import AlertStore
from reconciler.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def http_error(status: int, code: str | None = None) -> HttpResponseError:
    exc = HttpResponseError(message=f"The server said {status}.\nRequestId:abc\nTime:now")
    exc.status_code = status
    exc.error_code = code
    return exc


@pytest.mark.parametrize(
    ("exc", "kind", "meaning"),
    [
        (ClientAuthenticationError("Server failed to authenticate the request."), PermanentError, "credentials"),
        (http_error(403, "AuthorizationPermissionMismatch"), PermanentError, "refused access"),
        (http_error(403, "AuthorizationFailure"), PermanentError, "network rules"),
        (http_error(404, "TableNotFound"), PermanentError, "ensure_tables"),
        (http_error(400, "OutOfRangeInput"), PermanentError, "malformed"),
        (http_error(500, "InternalError"), TransientError, "retry on a later pass"),
        (http_error(503, "ServerBusy"), TransientError, "retry on a later pass"),
        (ServiceRequestError("connection refused"), TransientError, "unreachable"),
        (ResourceModifiedError("etag"), TransientError, "retry"),
    ],
)
def test_a_storage_failure_means_one_thing(exc: AzureError, kind: type[ReconcilerError], meaning: str) -> None:
    err = storage.storage_error("drift ledger", "read passes", exc)
    assert type(err) is kind and meaning in str(err)
    assert str(err).startswith("drift ledger: read passes: ") and "\n" not in str(err)


def test_the_ledger_gives_up_on_403_like_every_other_adapter() -> None:
    # Was TransientError in the ledger (retried every pass for ever) but PermanentError in the
    # alert store: a missing data role or a network rule does not heal by waiting.
    with pytest.raises(PermanentError, match="refused access"):
        raise_storage_error("read passes", http_error(403, "AuthorizationPermissionMismatch"))


@pytest.mark.parametrize("prefix", ["a", "ars", "Ars2", "a" * storage.MAX_TABLE_PREFIX])
def test_every_store_and_the_settings_accept_the_same_prefixes(prefix: str) -> None:
    assert Settings(ARS_TABLE_PREFIX=prefix).table_prefix == prefix
    Ledger("UseDevelopmentStorage=true", table_prefix=prefix)
    AlertStore("UseDevelopmentStorage=true", prefix)


@pytest.mark.parametrize("prefix", ["", "1ars", "ars-prod", "a" * (storage.MAX_TABLE_PREFIX + 1)])
def test_every_store_and_the_settings_refuse_the_same_prefixes(prefix: str) -> None:
    with pytest.raises(ValidationError):
        Settings(ARS_TABLE_PREFIX=prefix)
    with pytest.raises(ConfigurationError, match="table prefix"):
        Ledger("UseDevelopmentStorage=true", table_prefix=prefix)
    with pytest.raises(ConfigurationError, match="table prefix"):
        AlertStore("UseDevelopmentStorage=true", prefix)


def test_the_longest_table_name_fits_azures_63_characters() -> None:
    longest = "a" * storage.MAX_TABLE_PREFIX + max(storage.TABLE_SUFFIXES, key=len)
    assert len(longest) == 63


@pytest.mark.parametrize("value", ["hub-weu", "Hub_2.b", "a" * 80, "0f8fad5b-d9cb-469f-a165-70867728950e"])
def test_keys_already_stored_keep_their_value(value: str) -> None:
    # The alert store keyed targets (desired.Name) and the event intake keyed event ids (GUIDs)
    # with encodings of their own before the one encode_key: for those values all three agree,
    # so no stored row moves.
    old_store = re.sub(r"[/\\#?~\x00-\x1f\x7f-\x9f]", lambda m: f"~{ord(m.group()):02X}", value)
    old_intake = "".join(c if c.isalnum() or c in "-_." else f"~{ord(c):x}" for c in value)[:512]
    assert storage.encode_key(value) == old_store == old_intake


def test_a_long_event_id_is_not_cut_into_another_s_key() -> None:
    first, second = "e" * 600 + "1", "e" * 600 + "2"  # the intake cut keys at 512: these two collided
    assert storage.encode_key(first) != storage.encode_key(second)


def test_first_line_keeps_one_short_line() -> None:
    assert first_line(http_error(503)) == "The server said 503."
    assert first_line(ValueError()) == "ValueError"
    assert len(first_line(ValueError("x" * 1000))) == 300


def test_blind_is_any_failed_read() -> None:
    failed = drift.Drift("t", drift.DriftCode.OBSERVATION_FAILED, "read=hub/resource=ars", "m")
    other = drift.Drift("t", drift.DriftCode.PEER_DOWN, "peer=nva1", "m")
    assert drift.is_blind([other, failed]) and not drift.is_blind([other])
    assert drift.failed_reads([other, failed]) == [failed]


@pytest.mark.parametrize(
    "name", ["_first_line", "first_line", "is_blind", "raise_storage_error", "_storage_error", "encode_key", "_key",
             "checked_peer_asn"]
)  # fmt: skip
def test_each_rule_is_defined_once(name: str) -> None:
    defined = [
        str(path.relative_to(ROOT))
        for pkg in ("reconciler", "emulator", "localenv")
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.lstrip("_") == name.lstrip("_")
    ]
    assert len(defined) <= 1, defined
