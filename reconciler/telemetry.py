"""Telemetry hygiene: a span processor that keeps secret URLs out of Application Insights.

Owns what a span may carry out of the process: every string attribute (and the span name, its
events' attributes such as a recorded exception's message and stack, and its status text) with a
registered secret (teams.protect: the Teams webhook, the heartbeat URL) is redacted, and every
query value of a URL attribute is dropped, whatever its name (the httpx instrumentation redacts
only well-known signature parameters such as `sig`, not `code=` or a secret in the path). Must not
know which exporter runs after it; `function_app` installs it before Azure Monitor's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status

from reconciler import teams

# Attribute names that hold a URL or its parts (old and new HTTP semantic conventions).
URL_KEYS = frozenset({"http.url", "url.full", "url.query", "http.target", "url.path", "url.original"})


def scrub(key: str, value: Any) -> Any:
    """`value` as it may leave the process."""
    if not isinstance(value, str):
        return value
    text = teams.redact(value)
    if key in URL_KEYS:
        text = _no_query_values(text, bare=key == "url.query")
    return text


def _no_query_values(text: str, bare: bool) -> str:
    if bare:
        return urlencode([(k, teams.REDACTED) for k, _ in parse_qsl(text, keep_blank_values=True)])
    parts = urlsplit(text)
    if not parts.query and "@" not in parts.netloc:
        return text
    query = urlencode([(k, teams.REDACTED) for k, _ in parse_qsl(parts.query, keep_blank_values=True)])
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@host
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrubbed(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: scrub(k, v) for k, v in (attributes or {}).items()}


class RedactingSpanProcessor(SpanProcessor):
    """Redacts at start (the HTTP instrumentations set the URL then) and checks again at end."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key, value in (span.attributes or {}).items():
            clean = scrub(key, value)
            if clean != value:
                span.set_attribute(key, clean)
        name = teams.redact(span.name)
        if name != span.name:
            span.update_name(name)

    def on_end(self, span: ReadableSpan) -> None:
        # An ended span is read-only through the API, and the exporter's processor runs after this
        # one: where a secret arrived after start (a late attribute, a recorded exception, an error
        # status), replace the recorded values themselves.
        clean = scrubbed(span.attributes)
        if clean != dict(span.attributes or {}):
            span._attributes = BoundedAttributes(attributes=clean, immutable=True)
        events = [Event(e.name, scrubbed(e.attributes), e.timestamp) for e in span.events]
        if [dict(e.attributes or {}) for e in events] != [dict(e.attributes or {}) for e in span.events]:
            span._events = BoundedList.from_seq(len(events), events)
        description = span.status.description
        if description and teams.redact(description) != description:
            span._status = Status(span.status.status_code, teams.redact(description))
