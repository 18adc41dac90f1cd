"""Where each assigned partition starts, and what the projector does when Kafka's
retention deleted events it never projected.

Skipping deleted events would leave the read model silently wrong while later markers
advance the watermarks, so the projector stops instead (the consumer runs with
``auto.offset.reset=error``), unless the operator rebuilt the read model from the event
store and said so with ``CHRONOS_PROJECTOR_START_AFTER_RETENTION=1``.
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from chronos.metrics import PROJECTION_RETENTION_GAPS
from projector.errors import ProjectorError

# How long one offsets request to the broker may take while partitions are assigned.
_OFFSETS_TIMEOUT_SECONDS = 10


def starting_offsets(
    consumer: Consumer,
    partitions: list[TopicPartition],
    *,
    topic: str,
    start_after_retention: bool,
) -> tuple[list[TopicPartition], ProjectorError | None]:
    """Where each newly assigned partition starts: its committed offset, or the
    beginning when it has none.

    Unless retention deleted events this group never projected (a committed offset
    below the oldest one Kafka holds, or no commit and a partition that no longer
    starts at 0): such a partition starts at the oldest offset Kafka holds only with
    ``start_after_retention``.

    Returns:
        The partitions with their starting offsets, and the failure to raise from the
        next step (an assignment callback must not raise), if any.
    """
    try:
        committed = consumer.committed(partitions, timeout=_OFFSETS_TIMEOUT_SECONDS)
        lows = [
            consumer.get_watermark_offsets(p, timeout=_OFFSETS_TIMEOUT_SECONDS)[0]
            for p in committed
        ]
    except KafkaException as error:
        return partitions, ProjectorError(f"cannot read the assigned partitions' offsets: {error}")
    failure: ProjectorError | None = None
    for partition, low in zip(committed, lows, strict=True):
        if partition.offset >= low:
            continue
        if partition.offset < 0 and low == 0:
            partition.offset = 0  # a new group on a partition Kafka holds whole
            continue
        if not start_after_retention:
            PROJECTION_RETENTION_GAPS.inc()
            shown = partition.offset if partition.offset >= 0 else "none"
            failure = ProjectorError(
                f"partition {partition.partition} of {topic}: Kafka deleted the offsets "
                f"before {low} (retention) and this group's committed offset is {shown}: "
                "events were deleted before they were projected. Run `chronos projection "
                "rebuild` (it replays the event store), then start the projector once with "
                "CHRONOS_PROJECTOR_START_AFTER_RETENTION=1"
            )
        partition.offset = low
    return committed, failure


def retention_overtook(topic: str, partition: int | None, error: KafkaError) -> ProjectorError:
    """The failure for a consumer that found its next offset gone while it ran
    (retention overtook it, or the topic was recreated)."""
    assert error.code() == KafkaError._AUTO_OFFSET_RESET
    PROJECTION_RETENTION_GAPS.inc()
    return ProjectorError(
        f"the next offset of {topic}[{partition}] is gone ({error.str()}): events were "
        "deleted before they were projected; run `chronos projection rebuild`, then start "
        "the projector once with CHRONOS_PROJECTOR_START_AFTER_RETENTION=1"
    )
