"""Which ASNs may peer with Azure Route Server: its own ASN, the reserved ranges, the 16-bit rule.

Owns these platform facts once, as data, for the desired state and the ARM emulator alike. Must not
know documents, HTTP or FRR (it imports nothing, so any package may use it).

Source: Azure Route Server FAQ, "What Autonomous System Numbers (ASNs) can I use?" and "Can I use
32-bit (4 byte) ASNs?" (https://learn.microsoft.com/azure/route-server/route-server-faq).
"""

from __future__ import annotations

# Route Server FAQ (troubleshooting): "The ASN that Azure Route Server uses is 65515."
ARS_ASN = 65515

# Route Server FAQ: "No, Azure Route Server supports only 16-bit (2 bytes) ASNs."
MAX_PEER_ASN = 65535

# (first, last, why) — Route Server FAQ: "You can't use ASNs reserved by Azure or IANA", listing
# Azure 8074, 8075, 12076, 65515, 65517-65520 and IANA 23456, 64496-64511, 65535-65551. ASN 0 is
# not in the FAQ's list; IANA reserves it (RFC 7607) and no BGP speaker may use it.
RESERVED_ASNS: tuple[tuple[int, int, str], ...] = (
    (0, 0, "ASN 0 is reserved (RFC 7607)"),
    (8074, 8075, "8074-8075 are reserved by Azure (Microsoft public ASNs)"),
    (12076, 12076, "12076 is reserved by Azure (ExpressRoute MSEE)"),
    (23456, 23456, "23456 is AS_TRANS (RFC 6793), reserved by IANA"),
    (64496, 64511, "64496-64511 are documentation ASNs (RFC 5398), reserved by IANA"),
    (ARS_ASN, ARS_ASN, "65515 is Azure Route Server's own ASN; routes carrying it are dropped"),
    (65517, 65520, "65517-65520 are reserved by Azure"),
    (65535, 65551, "65535-65551 are reserved by IANA (RFC 7300, RFC 5398)"),
)


def peer_asn_problem(asn: int) -> str | None:
    """Why `asn` cannot peer with Route Server, or None when it can."""
    for first, last, why in RESERVED_ASNS:
        if first <= asn <= last:
            return f"ASN {asn} cannot peer with Route Server: {why}"
    if asn < 0 or asn > MAX_PEER_ASN:
        return f"ASN {asn} cannot peer with Route Server: it supports only 16-bit ASNs (1-65534)"
    return None


def checked_peer_asn(asn: int) -> int:
    """`asn` when Route Server peers with it; else ValueError with the reason (a pydantic validator:
    the desired state's peers and the agent's own local AS both use it)."""
    problem = peer_asn_problem(asn)
    if problem is not None:
        raise ValueError(problem)
    return asn
