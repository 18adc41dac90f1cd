"""What a message on the events topic looks like.

Event messages: key = account id (stream id), value = serialized
``chronos.v1.EventEnvelope``, headers (all UTF-8 strings): ``event_id``, ``event_type``,
``schema`` (e.g. ``chronos.v1.FundsDeposited``), ``schema_version``, ``stream_version``,
``position``, ``recorded_at`` (ISO 8601), the command's ``request_id``,
``correlation_id`` and ``causation_id``, and, when the command was traced,
``traceparent``.

Watermark markers: after every batch the poller has published and the broker has
acknowledged, it sends one marker to *every* partition, with header
``event_type = MARKER_EVENT_TYPE``, ``position = P`` (the batch's last position), no key
and an empty value. Positions are gapless and in commit order and the poller publishes
in position order, so when a consumer reaches marker P in partition p, it has seen every
event of p with position <= P. The projector's watermark for p is therefore the highest
marker (or event) position it has applied there, and position P is visible on the read
side once every partition's watermark is >= P.
"""

from __future__ import annotations

DEFAULT_TOPIC = "chronos.ledger.events"
MARKER_EVENT_TYPE = "_watermark"

HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_SCHEMA = "schema"
HEADER_SCHEMA_VERSION = "schema_version"
HEADER_STREAM_VERSION = "stream_version"
HEADER_POSITION = "position"
HEADER_RECORDED_AT = "recorded_at"
HEADER_TRACEPARENT = "traceparent"


def headers_dict(
    headers: list[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None,
) -> dict[str, str]:
    """Kafka message headers as a dict of strings (the last value of a repeated key wins)."""
    result: dict[str, str] = {}
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        if value is None:
            continue
        result[key] = value.decode() if isinstance(value, bytes) else value
    return result
