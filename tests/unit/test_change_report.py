"""NVA change reports: signed with a key derived from the agent token, inside a ±60 s window,
strictly parsed; anything else is forged, stale or malformed. Pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.attribution import ChangeSource
from reconciler.change_report import ChangedBy, ChangeKind, report_key, sign, verify
from reconciler.events import Rejected, Verdict

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TOKEN = "agent-token-0123456789abcdef0123456789abcdef"
KEY = report_key(TOKEN)
NONCE = "0123456789abcdef0123456789abcdef"


def body(**over: Any) -> bytes:
    data = {"v": 1, "nva_ip": "10.0.1.6", "kind": "config", "at": "2026-12-02T11:59:59+00:00",
            "by": "outside-agent", "summary": "network 0.0.0.0/0 removed", "old_hash": "a" * 64, "new_hash": "b" * 64}  # fmt: skip
    data.update(over)
    return json.dumps(data).encode()


def headers(raw: bytes, *, key: bytes = KEY, ts: int | None = None, nonce: str = NONCE) -> dict[str, str]:
    t = int(NOW.timestamp()) if ts is None else ts
    return {"X-ARS-Timestamp": str(t), "X-ARS-Nonce": nonce, "X-ARS-Signature": sign(key, t, nonce, raw)}


def test_a_signed_report_verifies_and_names_the_change() -> None:
    raw = body()
    report = verify(headers(raw), raw, KEY, NOW)
    assert (report.nva_ip, report.kind, report.by, report.nonce) == (
        "10.0.1.6",
        ChangeKind.CONFIG,
        ChangedBy.OUTSIDE,
        NONCE,
    )
    who = report.attribution()
    assert who.source is ChangeSource.AGENT and who.resource == "nva 10.0.1.6"
    assert "network 0.0.0.0/0 removed" in who.operation and "aaaaaaaaaaaa -> bbbbbbbbbbbb" in who.operation


def test_the_key_is_not_the_token() -> None:
    assert TOKEN.encode() != KEY and len(KEY) == 32


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: ({**h, "X-ARS-Signature": "v1=" + "0" * 64}, b),
        lambda h, b: (h, b.replace(b"10.0.1.6", b"10.0.1.7")),  # body changed after signing
        lambda h, b: ({**h, "X-ARS-Nonce": "f" * 32}, b),  # nonce changed after signing
        lambda h, b: ({k: v for k, v in h.items() if k != "X-ARS-Signature"}, b),
        lambda h, b: ({**h, "X-ARS-Nonce": "not-hex"}, b),
        lambda h, b: (headers(b, key=report_key("another-token")), b),
    ],
)
def test_tampered_or_unsigned_reports_are_forged(tamper: Any) -> None:
    raw = body()
    h, b = tamper(headers(raw), raw)
    with pytest.raises(Rejected) as err:
        verify(h, b, KEY, NOW)
    assert err.value.verdict is Verdict.FORGED


@pytest.mark.parametrize("skew", [61, -61, 3600])
def test_reports_outside_the_window_are_stale(skew: int) -> None:
    raw = body()
    with pytest.raises(Rejected) as err:
        verify(headers(raw, ts=int(NOW.timestamp()) - skew), raw, KEY, NOW)
    assert err.value.verdict is Verdict.STALE


@pytest.mark.parametrize(
    "raw",
    [
        body(v=2),
        body(kind="firmware"),
        body(by="someone"),
        body(at="yesterday"),
        body(at="2026-12-02T11:59:59"),
        b"[1, 2]",
        b"\xff\xfe",
    ],
)
def test_signed_but_malformed_reports_are_malformed(raw: bytes) -> None:
    with pytest.raises(Rejected) as err:
        verify(headers(raw), raw, KEY, NOW)
    assert err.value.verdict is Verdict.MALFORMED


def test_an_oversized_report_is_refused_before_hashing() -> None:
    raw = body(summary="x" * 9000)
    with pytest.raises(Rejected) as err:
        verify(headers(raw), raw, KEY, NOW + timedelta(seconds=1))
    assert err.value.verdict is Verdict.MALFORMED


@pytest.mark.parametrize("ts", ["²", "١٧٦٤٦٧٦٨٠٠", "9" * 5000, "-1", ""])
def test_a_timestamp_that_is_not_plain_ascii_seconds_is_refused_not_a_crash(ts: str) -> None:
    """`str.isdigit` takes "²" (int() then raises) and 5000 digits (past int()'s conversion limit):
    either would escape as a ValueError, a 500 instead of a refusal."""
    raw = body()
    with pytest.raises(Rejected) as err:
        verify({**headers(raw), "X-ARS-Timestamp": ts}, raw, KEY, NOW)
    assert err.value.verdict is Verdict.FORGED
