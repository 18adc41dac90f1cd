"""Projector settings, read once from the environment at start.

Variables (all optional except the two addresses):

* ``CHRONOS_KAFKA_BOOTSTRAP``, ``CHRONOS_ES_URL``, ``CHRONOS_PG_DSN``: the servers
  (required; the event store is read only to fill a version gap in what Kafka
  delivered).
* ``CHRONOS_EVENTS_TOPIC``: the events topic (default ``chronos.ledger.events``).
* ``CHRONOS_PROJECTOR_GROUP``: Kafka consumer group (default ``chronos-projector``).
* ``CHRONOS_INDEX_PREFIX``: prefix of the read-side indices (default ``chronos``).
* ``CHRONOS_PROJECTOR_BATCH_SIZE_MAX``: messages per poll and per bulk (default 500).
* ``CHRONOS_PROJECTOR_POLL_TIMEOUT_SECONDS``: how long one poll waits (default 0.05).
* ``CHRONOS_PROJECTOR_RETRIES_MAX``: attempts per batch while Elasticsearch is down
  before the process gives up and exits non-zero (default 30).
* ``CHRONOS_PROJECTOR_RETRY_BACKOFF_SECONDS_MAX``: cap of the jittered exponential
  backoff between attempts (default 5).
* ``CHRONOS_PROJECTOR_METRICS_PORT``: port of ``/metrics`` (default 9104; 0 disables).
* ``CHRONOS_PROJECTOR_REFRESH``: ``interval`` (default: bulks do not refresh; the
  projector refreshes every ``CHRONOS_PROJECTOR_SEARCH_REFRESH_SECONDS``, default 0.5, or
  when idle, then advances the searchable watermark), ``true`` (each bulk refreshes) or
  ``wait_for`` (each bulk waits for the index's scheduled refresh).
* ``CHRONOS_PROJECTOR_DOCUMENT_CACHE_SIZE_MAX``: account documents kept in memory so a
  batch can be folded without reading them back (default 20000; 0 turns it off).
* ``CHRONOS_PROJECTOR_START_AFTER_RETENTION``: ``1`` lets a partition whose oldest events
  Kafka's retention deleted before they were projected start at the oldest offset Kafka
  holds; set it only after ``chronos projection rebuild`` (default ``0``: the projector
  stops with an error instead).
* ``CHRONOS_PROJECTOR_TOPIC_WAIT_SECONDS_MAX``: how long to wait at start for the topic
  to exist (the outbox poller creates it; default 600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from chronos.config import (
    ConfigError,
    env_float,
    env_int,
    require_es_url,
    require_kafka_bootstrap,
    require_pg_dsn,
)
from chronos.outbox import contract
from chronos.read_model.indices import DEFAULT_PREFIX, IndexNames

# Bounds of the consumer's prefetch queue (messages are a few hundred bytes each).
QUEUED_KILOBYTES_MAX = 8192
QUEUED_MESSAGES_MIN = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectorConfig:
    kafka_bootstrap: str
    es_url: str
    # Empty only in tests whose events never reach an event store.
    pg_dsn: str = ""
    topic: str = contract.DEFAULT_TOPIC
    group_id: str = "chronos-projector"
    index_prefix: str = DEFAULT_PREFIX
    batch_size_max: int = 500
    poll_timeout_seconds: float = 0.05
    retries_max: int = 30
    retry_backoff_seconds_max: float = 5.0
    topic_wait_seconds_max: float = 600.0
    es_request_timeout_seconds: float = 30.0
    # How batches become searchable. "interval" (default): bulks do not refresh; the
    # applied watermark advances as soon as a bulk returns (documents readable by id), and
    # at most every search_refresh_interval_seconds (or when idle) the projector refreshes
    # and advances the searchable watermark. True: each bulk refreshes (both watermarks
    # advance together). "wait_for": each bulk waits for the scheduled refresh.
    refresh: str | bool = "interval"
    search_refresh_interval_seconds: float = 0.5
    # Account documents kept to fold the next batch without reading them back (0: none;
    # a document is a few hundred bytes).
    document_cache_size_max: int = 20_000
    metrics_port: int = 0
    # Set after a rebuild: a partition whose oldest events retention deleted may start
    # at the oldest offset Kafka holds (the rebuild replayed the deleted events).
    start_after_retention: bool = False

    @property
    def index_names(self) -> IndexNames:
        return IndexNames(prefix=self.index_prefix)

    def consumer_settings(self) -> dict[str, Any]:
        """librdkafka settings; the ones that matter for correctness are explicit."""
        return {
            "bootstrap.servers": self.kafka_bootstrap,
            "group.id": self.group_id,
            # Offsets are committed by hand, only after Elasticsearch acknowledged.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # No committed offset, or one Kafka no longer holds: the consumer reports it
            # and the projector decides (Projector._start_partition) rather than skip.
            "auto.offset.reset": "error",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            # The projector never creates the topic; the outbox poller does.
            "allow.auto.create.topics": False,
            "client.id": f"chronos-projector-{os.getpid()}",
            # librdkafka prefetches up to 64 MB / 100,000 messages by default: catching up
            # a backlog took the projector to 261 MB. A few batches ahead is enough.
            "queued.max.messages.kbytes": QUEUED_KILOBYTES_MAX,
            "queued.min.messages": QUEUED_MESSAGES_MIN,
        }

    @classmethod
    def from_env(cls) -> ProjectorConfig:
        """Reads ``CHRONOS_*`` variables (see the module docstring).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        prefix = os.environ.get("CHRONOS_INDEX_PREFIX", DEFAULT_PREFIX)
        try:
            IndexNames(prefix=prefix)
        except ValueError as error:
            raise ConfigError(f"CHRONOS_INDEX_PREFIX: {error}") from error
        group = os.environ.get("CHRONOS_PROJECTOR_GROUP", "chronos-projector")
        if not group or len(group) > 200:
            raise ConfigError("CHRONOS_PROJECTOR_GROUP must be 1 to 200 characters")
        topic = os.environ.get("CHRONOS_EVENTS_TOPIC", contract.DEFAULT_TOPIC)
        if not topic or len(topic) > 249:
            raise ConfigError("CHRONOS_EVENTS_TOPIC must be 1 to 249 characters")
        return cls(
            kafka_bootstrap=require_kafka_bootstrap(),
            es_url=require_es_url(),
            pg_dsn=require_pg_dsn(),
            topic=topic,
            group_id=group,
            index_prefix=prefix,
            batch_size_max=env_int(
                "CHRONOS_PROJECTOR_BATCH_SIZE_MAX", 500, minimum=1, maximum=2000
            ),
            poll_timeout_seconds=env_float(
                "CHRONOS_PROJECTOR_POLL_TIMEOUT_SECONDS", 0.05, minimum=0.001, maximum=10
            ),
            retries_max=env_int("CHRONOS_PROJECTOR_RETRIES_MAX", 30, minimum=0, maximum=1000),
            retry_backoff_seconds_max=env_float(
                "CHRONOS_PROJECTOR_RETRY_BACKOFF_SECONDS_MAX", 5.0, minimum=0.01, maximum=300
            ),
            topic_wait_seconds_max=env_float(
                "CHRONOS_PROJECTOR_TOPIC_WAIT_SECONDS_MAX", 600.0, minimum=0, maximum=86400
            ),
            metrics_port=env_int("CHRONOS_PROJECTOR_METRICS_PORT", 9104, minimum=0, maximum=65535),
            refresh=_refresh_mode(os.environ.get("CHRONOS_PROJECTOR_REFRESH", "interval")),
            start_after_retention=os.environ.get("CHRONOS_PROJECTOR_START_AFTER_RETENTION", "0")
            == "1",
            search_refresh_interval_seconds=env_float(
                "CHRONOS_PROJECTOR_SEARCH_REFRESH_SECONDS", 0.5, minimum=0.01, maximum=60
            ),
            document_cache_size_max=env_int(
                "CHRONOS_PROJECTOR_DOCUMENT_CACHE_SIZE_MAX", 20_000, minimum=0, maximum=1_000_000
            ),
        )


def _refresh_mode(raw: str) -> str | bool:
    if raw == "interval":
        return "interval"
    if raw == "true":
        return True
    if raw == "wait_for":
        return "wait_for"
    raise ConfigError(f"CHRONOS_PROJECTOR_REFRESH must be interval, true or wait_for, got {raw!r}")
