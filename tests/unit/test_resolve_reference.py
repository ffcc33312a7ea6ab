"""effective_routes.resolve (and Decision.internet) on plain integers (issue #18) decide exactly as the
ipaddress form they replaced.

The reference below is the former implementation, kept as the definition: split a block where a
more specific route starts inside it; else the longest covering prefix wins, then the source rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.effective_routes import (
    RESERVED_NONE,
    SYSTEM_ROUTES,
    CandidateRoute,
    Decision,
    HopType,
    RouteSource,
    resolve,
)


def reference(routes: Sequence[CandidateRoute], block: IPv4Network) -> tuple[Decision, ...]:
    out: list[Decision] = []

    def split(routes: Sequence[CandidateRoute], block: IPv4Network) -> None:
        inside = [r for r in routes if r.prefix != block and r.prefix.subnet_of(block)]
        if inside and block.prefixlen < 32:
            for half in block.subnets(prefixlen_diff=1):
                split([r for r in routes if r.prefix.overlaps(half)], half)
            return
        covering = [r for r in routes if block.subnet_of(r.prefix)]
        if not covering:
            out.append(Decision(block, ()))
            return
        longest = max(r.prefix.prefixlen for r in covering)
        best = [r for r in covering if r.prefix.prefixlen == longest]
        rank = max(r.source for r in best)
        out.append(Decision(block, tuple(r for r in best if r.source == rank)))

    split(routes, block)
    return tuple(out)


prefixes = st.builds(
    lambda addr, length: IPv4Network((addr, length), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32) | st.sampled_from([0, 1, 8, 16, 24, 32]),
)
routes = st.builds(
    CandidateRoute,
    prefixes,
    st.sampled_from(list(RouteSource)),
    st.sampled_from(list(HopType)),
    st.sampled_from([None, "10.0.3.4", "10.0.1.4"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(routes, max_size=12), st.booleans(), prefixes)
def test_resolve_matches_the_reference(found: list[CandidateRoute], system: bool, block: IPv4Network) -> None:
    table = (*found, *(SYSTEM_ROUTES if system else ()))
    assert resolve(table, block) == reference(table, block)
    decisions = resolve(table)
    assert decisions == reference(table, IPv4Network("0.0.0.0/0"))
    for d in decisions:  # `internet` on integers too: outside every reserved range
        assert d.internet == (not any(d.prefix.subnet_of(r) for r in RESERVED_NONE))
