"""Projector settings, read once from the environment at start.

The declarations below are the reference (docs/configuration.md is generated from them).
The dataclass fields that tests leave out take the declared defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from chronos.audit.settings import CHECKPOINTS_TOPIC
from chronos.config import (
    ES_SECURITY_SETTINGS,
    ES_URL,
    EVENTS_TOPIC,
    KAFKA_BOOTSTRAP,
    KAFKA_SECURITY_SETTINGS,
    PG_DSN,
)
from chronos.kafka_client import KafkaSecurity, kafka_client_config
from chronos.metrics import PROJECTOR_METRICS_PORT as METRICS_PORT
from chronos.read_model.client import ElasticsearchSecurity
from chronos.read_model.config import INDEX_PREFIX
from chronos.read_model.indices import IndexNames
from chronos.settings import SettingsGroup, choice, flag, integer, number, text

# Bounds of the consumer's prefetch queue (messages are a few hundred bytes each).
QUEUED_KILOBYTES_MAX = 8192
QUEUED_MESSAGES_MIN = 10_000

GROUP = text(
    "CHRONOS_PROJECTOR_GROUP",
    "chronos-projector",
    length_max=200,
    doc="Kafka consumer group of the projectors.",
)
BATCH_SIZE_MAX = integer(
    "CHRONOS_PROJECTOR_BATCH_SIZE_MAX",
    500,
    minimum=1,
    maximum=2000,
    doc="Messages per poll and per bulk request.",
)
POLL_TIMEOUT_SECONDS = number(
    "CHRONOS_PROJECTOR_POLL_TIMEOUT_SECONDS",
    0.05,
    minimum=0.001,
    maximum=10,
    doc="How long one poll of Kafka waits.",
)
RETRIES_MAX = integer(
    "CHRONOS_PROJECTOR_RETRIES_MAX",
    30,
    minimum=0,
    maximum=1000,
    doc="Attempts per batch while Elasticsearch is down before the process exits non-zero.",
)
RETRY_BACKOFF_SECONDS_MAX = number(
    "CHRONOS_PROJECTOR_RETRY_BACKOFF_SECONDS_MAX",
    5.0,
    minimum=0.01,
    maximum=300,
    doc="Cap of the jittered exponential backoff between those attempts.",
)
TOPIC_WAIT_SECONDS_MAX = number(
    "CHRONOS_PROJECTOR_TOPIC_WAIT_SECONDS_MAX",
    600.0,
    minimum=0,
    maximum=86400,
    doc="How long to wait at start for the topic to exist (the outbox poller creates it).",
)
_REFRESH_MODES: dict[str, str | bool] = {
    "interval": "interval",
    "true": True,
    "wait_for": "wait_for",
}
REFRESH = choice(
    "CHRONOS_PROJECTOR_REFRESH",
    "interval",
    _REFRESH_MODES,
    doc="`interval`: bulks do not refresh, the projector refreshes every "
    "`CHRONOS_PROJECTOR_SEARCH_REFRESH_SECONDS` (or when idle) and then advances the "
    "searchable watermark; `true`: each bulk refreshes; `wait_for`: each bulk waits for "
    "the index's scheduled refresh.",
)
SEARCH_REFRESH_SECONDS = number(
    "CHRONOS_PROJECTOR_SEARCH_REFRESH_SECONDS",
    0.5,
    minimum=0.01,
    maximum=60,
    doc="With `interval` refresh: how often the projector refreshes the indices.",
)
DOCUMENT_CACHE_SIZE_MAX = integer(
    "CHRONOS_PROJECTOR_DOCUMENT_CACHE_SIZE_MAX",
    20_000,
    minimum=0,
    maximum=1_000_000,
    doc="Account documents kept in memory to fold a batch without reading them back (0: none).",
)
START_AFTER_RETENTION = flag(
    "CHRONOS_PROJECTOR_START_AFTER_RETENTION",
    doc="1 lets a partition whose oldest events Kafka's retention deleted before they were "
    "projected start at the oldest offset Kafka holds; set it only after `chronos "
    "projection rebuild` (0: the projector stops with an error instead).",
)

SETTINGS = SettingsGroup(
    title="Projector (`python -m projector`)",
    summary="Folds the events from Kafka into the Elasticsearch read model. It reads the "
    "event store only to fill a version gap in what Kafka delivered.",
    settings=(
        KAFKA_BOOTSTRAP,
        *KAFKA_SECURITY_SETTINGS,
        ES_URL,
        *ES_SECURITY_SETTINGS,
        PG_DSN,
        EVENTS_TOPIC,
        GROUP,
        INDEX_PREFIX,
        BATCH_SIZE_MAX,
        POLL_TIMEOUT_SECONDS,
        RETRIES_MAX,
        RETRY_BACKOFF_SECONDS_MAX,
        TOPIC_WAIT_SECONDS_MAX,
        REFRESH,
        SEARCH_REFRESH_SECONDS,
        DOCUMENT_CACHE_SIZE_MAX,
        START_AFTER_RETENTION,
        METRICS_PORT,
        CHECKPOINTS_TOPIC,
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectorConfig:
    kafka_bootstrap: str
    es_url: str
    # Required from the environment; empty only in tests whose events never reach an
    # event store.
    pg_dsn: str = ""
    # None: read from the environment when a client is built (tests build configs).
    kafka_security: KafkaSecurity | None = None
    es_security: ElasticsearchSecurity | None = None
    topic: str = EVENTS_TOPIC.default
    group_id: str = GROUP.default
    index_prefix: str = INDEX_PREFIX.default
    batch_size_max: int = BATCH_SIZE_MAX.default
    poll_timeout_seconds: float = POLL_TIMEOUT_SECONDS.default
    retries_max: int = RETRIES_MAX.default
    retry_backoff_seconds_max: float = RETRY_BACKOFF_SECONDS_MAX.default
    topic_wait_seconds_max: float = TOPIC_WAIT_SECONDS_MAX.default
    es_request_timeout_seconds: float = 30.0
    # How batches become searchable. "interval" (default): bulks do not refresh; the
    # applied watermark advances as soon as a bulk returns (documents readable by id), and
    # at most every search_refresh_interval_seconds (or when idle) the projector refreshes
    # and advances the searchable watermark. True: each bulk refreshes (both watermarks
    # advance together). "wait_for": each bulk waits for the scheduled refresh.
    refresh: str | bool = REFRESH.default
    search_refresh_interval_seconds: float = SEARCH_REFRESH_SECONDS.default
    # Account documents kept to fold the next batch without reading them back (0: none;
    # a document is a few hundred bytes).
    document_cache_size_max: int = DOCUMENT_CACHE_SIZE_MAX.default
    metrics_port: int = METRICS_PORT.default
    # Set after a rebuild: a partition whose oldest events retention deleted may start
    # at the oldest offset Kafka holds (the rebuild replayed the deleted events).
    start_after_retention: bool = START_AFTER_RETENTION.default
    # Empty: the events topic's name followed by ".checkpoints" (chronos.audit.settings).
    checkpoints_topic: str = CHECKPOINTS_TOPIC.default

    @property
    def index_names(self) -> IndexNames:
        return IndexNames(prefix=self.index_prefix)

    def consumer_settings(self) -> dict[str, Any]:
        """librdkafka settings; the ones that matter for correctness are explicit."""
        return kafka_client_config(
            self.kafka_bootstrap,
            self.kafka_security,
            **{
                "group.id": self.group_id,
                # Offsets are committed by hand, only after Elasticsearch acknowledged.
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # No committed offset, or one Kafka no longer holds: the consumer reports it
                # and the projector decides (projector.offsets.starting_offsets) rather than skip.
                "auto.offset.reset": "error",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                # The projector never creates the topic; the outbox poller does.
                "allow.auto.create.topics": False,
                "client.id": f"chronos-projector-{os.getpid()}",
                # librdkafka prefetches up to 64 MB / 100,000 messages by default, which makes a
                # projector catching up a backlog several times its usual size. A few batches
                # ahead is enough.
                "queued.max.messages.kbytes": QUEUED_KILOBYTES_MAX,
                "queued.min.messages": QUEUED_MESSAGES_MIN,
            },
        )

    @classmethod
    def from_env(cls) -> ProjectorConfig:
        """Reads ``CHRONOS_*`` variables (see ``SETTINGS`` and docs/configuration.md).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        return cls(
            kafka_bootstrap=KAFKA_BOOTSTRAP.read(),
            es_url=ES_URL.read(),
            pg_dsn=PG_DSN.read(),
            kafka_security=KafkaSecurity.from_env(),
            es_security=ElasticsearchSecurity.from_env(),
            topic=EVENTS_TOPIC.read(),
            group_id=GROUP.read(),
            index_prefix=INDEX_PREFIX.read(),
            batch_size_max=BATCH_SIZE_MAX.read(),
            poll_timeout_seconds=POLL_TIMEOUT_SECONDS.read(),
            retries_max=RETRIES_MAX.read(),
            retry_backoff_seconds_max=RETRY_BACKOFF_SECONDS_MAX.read(),
            topic_wait_seconds_max=TOPIC_WAIT_SECONDS_MAX.read(),
            metrics_port=METRICS_PORT.read(),
            refresh=REFRESH.read(),
            start_after_retention=START_AFTER_RETENTION.read(),
            search_refresh_interval_seconds=SEARCH_REFRESH_SECONDS.read(),
            document_cache_size_max=DOCUMENT_CACHE_SIZE_MAX.read(),
            checkpoints_topic=CHECKPOINTS_TOPIC.read(),
        )
