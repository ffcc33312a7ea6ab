"""Bearer tokens: what a strong one looks like, and the current + next pair that makes rotation
seamless. Owns the token file's format (one token per line: current, then optionally next) and
the strength rule; must not know HTTP. Never puts a token (or part of one) in a message.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field

MIN_RANDOM_BYTES = 32
# 32 random bytes: 43 characters of base64url (secrets.token_urlsafe(32)) or 64 of hex.
_BASE64 = re.compile(r"^[A-Za-z0-9_\-+/]+=*$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
HOW_TO_MAKE = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'  (or: openssl rand -hex 32)"


class WeakToken(ValueError):
    """The token is too short or not random-looking; the message says why, never the token."""


def check_strength(token: str, what: str = "token") -> None:
    """At least 32 random bytes as base64/base64url or hex, and not a repeated pattern."""
    if _HEX.match(token):
        need, distinct = 2 * MIN_RANDOM_BYTES, 10
    elif _BASE64.match(token):
        need, distinct = -(-MIN_RANDOM_BYTES * 4 // 3), 16
    else:
        raise WeakToken(f"the {what} must be base64url or hex text (32 random bytes); {HOW_TO_MAKE}")
    if len(token) < need:
        raise WeakToken(
            f"the {what} has {len(token)} characters; {MIN_RANDOM_BYTES} random bytes need at least {need}; "
            + HOW_TO_MAKE
        )
    # random text of this length uses many different characters; "aaaa..." or "abcabc..." does not
    if len(set(token)) < distinct:
        raise WeakToken(f"the {what} repeats a few characters and cannot be random; {HOW_TO_MAKE}")


@dataclass(frozen=True)
class TokenSet:
    """The tokens the agent accepts: the current one and, during a rotation, the next one."""

    current: str = field(repr=False)
    next: str | None = field(default=None, repr=False)

    def accepts(self, presented: str) -> bool:
        if not presented or not self.current:
            return False  # an empty token never matches, even an empty setting
        got = presented.encode()
        # compare_digest for each, and no early exit: the time taken must not tell which matched
        ok = hmac.compare_digest(got, self.current.encode())
        if self.next is not None:
            ok = hmac.compare_digest(got, self.next.encode()) | ok
        return ok


def parse_file(text: str) -> TokenSet:
    """The token file: the current token on the first line, the next one (optional) on the second.
    Blank lines and `#` comments are ignored."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise WeakToken(f"the token file holds no token; {HOW_TO_MAKE}")
    if len(lines) > 2:
        raise WeakToken("the token file holds more than two tokens (current, then next)")
    for i, t in enumerate(lines):
        check_strength(t, ("current token (line 1)", "next token (line 2)")[i])
    return TokenSet(lines[0], lines[1] if len(lines) == 2 else None)
