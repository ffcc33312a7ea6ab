"""The agent's guards without FRR: token strength and the current+next pair, the policy file's
shape and check, the trusted-file rules, and the single-flight health cache (issue #13)."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest

from nva_agent import policy, tokens
from nva_agent.files import FileProblem, Watched, read_trusted
from nva_agent.frr import FrrError
from nva_agent.intent import IntentService, Timing
from nva_agent.models import BgpIntent, HealthReason

POLICY = """
neighbors: [{ip: 10.0.2.4, asn: 65515}, {ip: 10.0.2.5, asn: 65515}]
prefixes: [0.0.0.0/0]
next_hops: [10.0.3.0/26]
"""


def intent(**changes: Any) -> BgpIntent:
    body: dict[str, Any] = {
        "local_asn": 65001,
        "neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.2.5", "asn": 65515}],
        "prefixes": ["0.0.0.0/0"],
        "next_hop": "10.0.3.4",
    }
    body.update(changes)
    return BgpIntent.model_validate(body)


# ------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("token", [secrets.token_urlsafe(32), secrets.token_hex(32), secrets.token_urlsafe(48)])
def test_32_random_bytes_are_accepted(token: str) -> None:
    tokens.check_strength(token)


@pytest.mark.parametrize(
    "token",
    ["a" * 64, "ab" * 32, secrets.token_hex(16), secrets.token_urlsafe(16), "pass word " * 6, "Zm9v" * 11],
    ids=["one-char", "two-chars", "16-bytes-hex", "16-bytes-b64", "words", "pattern"],
)
def test_weak_tokens_are_refused_without_echoing_them(token: str) -> None:
    with pytest.raises(tokens.WeakToken) as exc:
        tokens.check_strength(token)
    assert token not in str(exc.value)


def test_the_token_file_holds_current_then_next_and_both_are_accepted() -> None:
    current, nxt = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    pair = tokens.parse_file(f"# rotated 2026-12-02\n{current}\n\n{nxt}\n")
    assert pair.accepts(current) and pair.accepts(nxt)
    assert not pair.accepts(secrets.token_urlsafe(32)) and not pair.accepts("")
    assert current not in repr(pair) and nxt not in repr(pair)
    with pytest.raises(tokens.WeakToken, match="more than two"):
        tokens.parse_file("\n".join(secrets.token_urlsafe(32) for _ in range(3)))


# ------------------------------------------------------------------------------- policy
def test_the_policy_allows_the_design_intent() -> None:
    policy.check(policy.parse(POLICY), intent())
    policy.check(policy.parse(POLICY), intent(next_hop=None, prefixes=[]))  # withdraw, own next hop


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"prefixes": ["0.0.0.0/0", "192.0.2.0/24"]}, policy.PolicyRule.PREFIXES),
        ({"prefixes": ["0.0.0.0/1"]}, policy.PolicyRule.PREFIXES),  # exact prefixes, not "inside"
        ({"next_hop": "10.0.3.64"}, policy.PolicyRule.NEXT_HOPS),
        ({"neighbors": [{"ip": "10.0.2.6", "asn": 65515}]}, policy.PolicyRule.NEIGHBORS),
        ({"neighbors": [{"ip": "10.0.2.4", "asn": 65514}]}, policy.PolicyRule.NEIGHBORS),
        ({"neighbors": [{"ip": "10.0.2.4", "asn": 65001}]}, policy.PolicyRule.LOCAL_ASN_NEIGHBOR),
    ],
)
def test_an_intent_outside_the_policy_names_the_rule(changes: dict[str, Any], rule: policy.PolicyRule) -> None:
    with pytest.raises(policy.PolicyViolation) as exc:
        policy.check(policy.parse(POLICY), intent(**changes))
    assert exc.value.rule is rule


def test_without_a_policy_only_the_ibgp_rule_holds() -> None:
    policy.check(None, intent(prefixes=["192.0.2.0/24"], next_hop="198.51.100.1"))
    with pytest.raises(policy.PolicyViolation, match="no-local-asn-neighbor"):
        policy.check(None, intent(neighbors=[{"ip": "10.0.1.9", "asn": 65001}]))


def test_a_pinned_local_asn_refuses_another() -> None:
    with pytest.raises(policy.PolicyViolation) as exc:
        policy.check(policy.parse(POLICY + "local_asn: 65001\n"), intent(local_asn=65002))
    assert exc.value.rule is policy.PolicyRule.LOCAL_ASN


@pytest.mark.parametrize(
    "text",
    ["", "neighbors: [", POLICY + "prefixs: [10.0.0.0/8]\n", POLICY.replace("10.0.3.0/26", "10.0.3.4/26")],
    ids=["empty", "not-yaml", "typo-key", "host-bits"],
)
def test_a_bad_policy_file_is_an_error_naming_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match=r"policy|YAML"):
        policy.parse(text)


# ------------------------------------------------------------------------------- trusted files
def test_a_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    f.chmod(0o644)
    assert read_trusted(f) == POLICY
    f.chmod(0o664)
    with pytest.raises(FileProblem, match="writable by group or others"):
        read_trusted(f)
    with pytest.raises(FileProblem, match="cannot be read"):
        read_trusted(tmp_path / "absent")


def test_a_fifo_or_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    # A FIFO blocks a plain open() until someone writes to it, and /dev/zero never ends: either
    # would hang the agent at start or on a SIGHUP, so the check must come before any read.
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo, 0o644)
    outcome: list[BaseException | str] = []

    def read() -> None:
        try:
            outcome.append(read_trusted(fifo))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("read_trusted blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], FileProblem) and "not a regular file" in str(outcome[0])
    with pytest.raises(FileProblem, match="not a regular file"):
        read_trusted(Path("/dev/zero"))


def test_a_watched_file_is_reread_on_change_and_fails_closed(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    f.chmod(0o644)
    watched = Watched(f, policy.parse, "policy file")
    assert watched.get().prefixes == ["0.0.0.0/0"]
    tmp = tmp_path / "new.yaml"
    tmp.write_text(POLICY.replace("[0.0.0.0/0]", "[0.0.0.0/1, 128.0.0.0/1]"))
    tmp.chmod(0o644)
    os.replace(tmp, f)  # an atomic replace, as editors and config management do
    assert watched.get().prefixes == ["0.0.0.0/1", "128.0.0.0/1"]
    f.write_text("prefixes: [")
    with pytest.raises(FileProblem):
        watched.get()


# ------------------------------------------------------------------------------- health cache
class CountingFrr:
    def __init__(self, fail: FrrError | None = None) -> None:
        self.calls = 0
        self.fail = fail

    async def show_json(self, command: str) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise self.fail
        return {}

    async def running_config(self) -> str:
        raise AssertionError("not used")

    async def check(self, config: str) -> None:
        raise AssertionError("not used")

    async def reload(self, config: str) -> None:
        raise AssertionError("not used")

    async def soft_out(self) -> None:
        raise AssertionError("not used")


async def test_concurrent_health_checks_share_one_vtysh_per_interval() -> None:
    now = [0.0]
    frr = CountingFrr()
    service = IntentService(frr, Timing(health_interval=1.0), clock=lambda: now[0])
    await asyncio.gather(*(service.health() for _ in range(200)))
    assert frr.calls == 1
    now[0] = 0.9
    await service.health()
    assert frr.calls == 1
    now[0] = 1.0
    await service.health()
    assert frr.calls == 2


async def test_a_cached_failure_keeps_its_fixed_reason() -> None:
    frr = CountingFrr(FrrError("vtysh -c 'show bgp summary json' exited 1: Exiting: failed to connect to any daemons."))
    service = IntentService(frr, clock=lambda: 0.0)
    for _ in range(3):
        with pytest.raises(FrrError) as exc:
            await service.health()
        assert exc.value.reason is HealthReason.VTY_UNREACHABLE
    assert frr.calls == 1


def test_an_empty_token_never_matches() -> None:
    assert not tokens.TokenSet("").accepts("")
    assert not tokens.TokenSet(secrets.token_urlsafe(32)).accepts("")
