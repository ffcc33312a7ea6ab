"""A peer's agent URL: plain http:// only for an agent marked as a lab one (issue #13, item 3)."""

from __future__ import annotations

import pytest

from reconciler import desired
from reconciler.errors import DesiredStateError

DOC = """
version: 1
targets:
  - name: hub
    subscription_id: sub-1
    resource_group: rg
    route_server: ars
    firewall: {{name: fw}}
    peers: [{{name: nva1, ip: 10.0.1.6, asn: 65001, agent_url: '{url}', token_setting: NVA1_TOKEN{extra}}}]
"""


def test_a_plain_http_agent_url_is_refused_with_the_reason() -> None:
    with pytest.raises(DesiredStateError) as info:
        desired.loads(DOC.format(url="http://10.0.1.6:8179", extra=""), "d.yaml")
    assert "in clear" in str(info.value) and "agent_lab" in str(info.value)


def test_a_plain_http_agent_url_is_accepted_for_a_lab_agent() -> None:
    state = desired.loads(DOC.format(url="http://127.0.0.1:8179", extra=", agent_lab: true"), "d.yaml")
    assert state.targets[0].peers[0].agent_lab is True


def test_an_https_agent_url_needs_no_mark() -> None:
    state = desired.loads(DOC.format(url="https://10.0.1.6:8443", extra=""), "d.yaml")
    assert state.targets[0].peers[0].agent_lab is False
