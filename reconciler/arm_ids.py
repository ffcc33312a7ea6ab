"""The ARM ID of a Microsoft.Network resource: the one format the ARM adapter's request paths, the
Activity Log filter, the event screen and the cards' portal links are built from.

Owns the layout `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/{type}/{name}
[/{child type}/{child name}...]` (learn.microsoft.com, "Resource ID" in the ARM template functions
reference). Pure; must not know which resources a target has, nor how a caller quotes or compares
an ID: `segment` is applied to every part (URL-quoting for a path or a link), and matching is the
caller's (ARM IDs compare case-insensitively).
"""

from __future__ import annotations

from collections.abc import Callable


def network_id(subscription: str, resource_group: str, *path: str, segment: Callable[[str], str] = str) -> str:
    """`path` is type, name, child type, child name, ...; a path that ends with a type is the prefix
    of every resource of that type in the group."""
    s, rg, *rest = (segment(p) for p in (subscription, resource_group, *path))
    return "/".join([f"/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network", *rest])
