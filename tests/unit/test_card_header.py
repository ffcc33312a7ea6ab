"""`cards.header_texts`: the one reader of a built message's header (the local receiver and the demo print it)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.alerts import Kind
from reconciler.cards import header_texts
from reconciler.drift import DriftCode
from tests.unit.test_cards import cards_of, content, note


def test_the_header_of_a_built_card_is_its_status_line_then_its_headline() -> None:
    [msg] = cards_of([note(Kind.FIRING, DriftCode.PEER_DOWN)])
    items = content(msg)["body"][0]["items"]
    texts = header_texts(msg)
    assert texts[:2] == [items[0]["text"], items[1]["text"]]
    assert texts[0].startswith("FIRING · ")


@pytest.mark.parametrize("junk", [{}, [], None, "text", {"attachments": []}, {"attachments": [{"content": {"body": []}}]},
                                  {"attachments": [{"content": {"body": [{"items": ["x", {"type": "Image"}]}]}}]}])
def test_anything_else_has_no_header(junk: Any) -> None:
    assert header_texts(junk) == []
