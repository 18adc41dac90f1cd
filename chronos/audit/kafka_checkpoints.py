"""Reads every signed checkpoint back from the checkpoints topic, for ``chronos verify``.

Kafka is the checkpoints' record: the topic keeps every one (unlimited retention), the
poller's leader writes there and nowhere else, and reading it needs no index of ours. The
read side keeps a copy (the projector's checkpoints index) for browsing; verify reads the
topic itself so that it checks the very messages that were signed.
"""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from chronos.errors import ChronosError
from chronos.kafka_client import KafkaSecurity, kafka_client_config

# Bounds of one read of the whole topic.
_METADATA_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 1.0
_IDLE_POLLS_MAX = 30
MESSAGES_MAX = 10_000_000

# The read needs no consumer group, but librdkafka insists on one and starts looking up
# its coordinator, which a close right after the read interrupts with an error line on
# stderr. The read reports its own failures (an exception, once), so librdkafka's log
# lines go nowhere.
_QUIET_LOGGER = logging.getLogger("chronos.audit.kafka_checkpoints")
_QUIET_LOGGER.addHandler(logging.NullHandler())
_QUIET_LOGGER.propagate = False


class CheckpointsUnavailable(ChronosError):
    """The checkpoints topic could not be read."""


def read_checkpoint_messages(
    bootstrap: str, topic: str, security: KafkaSecurity | None = None
) -> list[bytes]:
    """Every message value of ``topic``, from the beginning to its end at the time of the
    call. A topic that does not exist has no checkpoints (empty list).

    Raises:
        CheckpointsUnavailable: Kafka did not answer, or the read stalled.
    """
    consumer = Consumer(
        kafka_client_config(
            bootstrap,
            security,
            **{
                # A group of its own that commits nothing: verify only reads.
                "group.id": f"chronos-verify-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "allow.auto.create.topics": False,
                "isolation.level": "read_committed",
                "logger": _QUIET_LOGGER,
            },
        )
    )
    try:
        return _read_all(consumer, topic)
    except KafkaException as error:
        raise CheckpointsUnavailable(f"cannot read topic {topic}: {error}") from error
    finally:
        consumer.close()


def _read_all(consumer: Consumer, topic: str) -> list[bytes]:
    described = consumer.list_topics(topic=topic, timeout=_METADATA_TIMEOUT_SECONDS).topics.get(
        topic
    )
    if described is None or described.error is not None or not described.partitions:
        return []
    ends: dict[int, int] = {}
    for partition in described.partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=_METADATA_TIMEOUT_SECONDS
        )
        if high > low:
            ends[partition] = high
    if not ends:
        return []
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    values: list[bytes] = []
    idle_polls = 0
    while ends:
        message = consumer.poll(_POLL_SECONDS)
        if message is None:
            idle_polls += 1
            if idle_polls > _IDLE_POLLS_MAX:
                raise CheckpointsUnavailable(f"reading {topic} stalled")
            continue
        idle_polls = 0
        if message.error() is not None:
            raise CheckpointsUnavailable(f"reading {topic}: {message.error()}")
        values.append(message.value() or b"")
        assert len(values) <= MESSAGES_MAX, "a checkpoints topic this large is not ours"
        partition, offset = message.partition(), message.offset()
        if partition in ends and offset is not None and offset + 1 >= ends[partition]:
            del ends[partition]
    return values
