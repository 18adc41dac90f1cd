"""What a message on the events topic looks like.

Event messages: key = account id (stream id), value = serialized
``chronos.v1.EventEnvelope``, headers (all UTF-8 strings): ``event_id``, ``event_type``,
``schema`` (e.g. ``chronos.v1.FundsDeposited``), ``schema_version``, ``stream_version``,
``position``, ``recorded_at`` (ISO 8601), ``chain_hash`` (the event's hash chain value,
lowercase hex: docs/audit.md), the command's ``request_id``,
``correlation_id`` and ``causation_id``, when the command was traced,
``traceparent``, and, when the caller was authenticated, ``principal`` (the token's
subject: who caused the event) and ``principal_token_id`` (the token's ``jti``, an
identifier, never the token itself).

Watermark markers: messages with header ``event_type = MARKER_EVENT_TYPE``,
``position = P``, no key and an empty value. The leading poller sends one to *every*
partition after every batch the broker has acknowledged, again every
``CHRONOS_POLLER_MARKER_INTERVAL_SECONDS`` while idle (a marker can be lost: a crash
within the producer's linger, a broker failure after the batch's acknowledgement), and at
once to partitions added to the topic (it re-reads the partition count every
``CHRONOS_POLLER_PARTITION_REFRESH_SECONDS``). P is always a position up to which the
broker has acknowledged *every* event before the marker was produced (after a failover,
the new leader derives it from the outbox: ``outbox_poller.markers``), and the producer
keeps each partition in the order it sent, so when a consumer reaches marker P in
partition p, it has seen every event of p with position <= P. Markers repeat and may
arrive out of order across failovers (an older P after a newer one): a consumer keeps
the highest. The projector's watermark for p is the highest marker position it has
applied there, and position P is visible on the read side once every partition's
watermark is >= P.
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
HEADER_PRINCIPAL = "principal"
HEADER_PRINCIPAL_TOKEN_ID = "principal_token_id"
HEADER_CHAIN_HASH = "chain_hash"


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
