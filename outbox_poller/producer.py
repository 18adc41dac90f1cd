"""The relay's Kafka side that is not the loop: the producer's settings and the topic
the poller creates."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from chronos.errors import ChronosError
from chronos.kafka_client import KafkaSecurity, kafka_client_config
from outbox_poller.markers import partition_count

_logger = logging.getLogger(__name__)

# How long one admin request to the broker may take.
_ADMIN_TIMEOUT_SECONDS = 10
# A created topic's metadata can take a moment to reach every broker: how often and
# how many times to look before giving up.
_METADATA_CHECK_SECONDS = 0.1
_METADATA_CHECKS_MAX = 50


class KafkaUnavailable(ChronosError):
    """Kafka did not acknowledge a batch; nothing of it was marked published."""


def producer_settings(bootstrap: str, security: KafkaSecurity | None = None) -> dict[str, Any]:
    """librdkafka settings of the relay's producer; the ones that matter are explicit.
    ``security``: default read from the environment."""
    return kafka_client_config(bootstrap, security) | {
        # Exactly-once per partition from this producer: no duplicates from its own
        # retries, and no reordering within a partition.
        "enable.idempotence": True,
        "acks": "all",
        # A batch never waits for the linger: flush() sends at once whatever is queued.
        # Only the markers queued after it wait (at most this long, or until the next
        # batch's flush). A 1 ms linger woke librdkafka's broker thread every millisecond
        # while they waited, which cost CPU and gained nothing.
        "linger.ms": 5,
        # librdkafka leaves Nagle's algorithm on by default: a small produce request can
        # then wait for the previous one's TCP acknowledgement (up to tens of ms).
        "socket.nagle.disable": True,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "client.id": "chronos-outbox-poller",
    }


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    replication_factor: int,
    security: KafkaSecurity | None = None,
) -> int:
    """Creates ``topic`` when missing; returns its partition count.

    Raises:
        KafkaUnavailable: the broker did not answer or refused.
    """
    admin = AdminClient(kafka_client_config(bootstrap, security))
    try:
        metadata = admin.list_topics(timeout=_ADMIN_TIMEOUT_SECONDS)
        if topic not in metadata.topics:
            futures = admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)],
                operation_timeout=_ADMIN_TIMEOUT_SECONDS,
            )
            try:
                futures[topic].result(timeout=15)
                _logger.info("created topic %s with %d partitions", topic, partitions)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        for _ in range(_METADATA_CHECKS_MAX):
            count = partition_count(admin, topic, timeout_seconds=_ADMIN_TIMEOUT_SECONDS)
            if count is not None:
                return count
            time.sleep(_METADATA_CHECK_SECONDS)
    except KafkaException as error:
        raise KafkaUnavailable(f"cannot create or describe topic {topic}: {error}") from error
    raise KafkaUnavailable(f"topic {topic} has no partitions after creation")
