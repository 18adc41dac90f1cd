"""Watermark markers (``chronos.outbox.contract``): what position they may claim, which
partitions they go to, and how often the leader sends them.

A marker carrying P tells the projector that every event with a position <= P is
already in the partition before it. That holds only if Kafka acknowledged every such
event before the marker was produced: the producer is idempotent, so a partition keeps
the order of what one producer sent it. The leader therefore only ever claims a position
up to which Kafka has acknowledged everything, and it keeps sending markers while idle,
because the projector's watermarks move on markers alone: markers lost after the last
batch (a crash within the linger, a broker failure after the acknowledgement) would
otherwise leave every reader of a later position waiting for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import KafkaException

from chronos.outbox import contract
from outbox_poller.config import PollerConfig

_logger = logging.getLogger(__name__)

# Why this is safe, from the database alone (a new leader knows nothing of the batches
# its predecessor sent):
# * A row is marked published only after Kafka acknowledged it, and only published rows
#   are pruned: an outbox row that is marked, or gone, has been acknowledged.
# * The writer takes its positions from ledger_head under that row's lock, held to the
#   commit of the transaction that also inserts the outbox rows (its append statement):
#   positions are gapless and commit in position order. A snapshot that sees ledger_head
#   at H therefore sees every outbox row <= H.
# * One statement is one snapshot. In it, every row below the lowest unpublished one is
#   marked or gone, so acknowledged; with no unpublished row, every row up to H is. The
#   least() with H also keeps a claim from running ahead of what the ledger has written.
_ACKNOWLEDGED_POSITION = """
SELECT least((SELECT min(position) - 1 FROM outbox WHERE published_at IS NULL), position)
FROM ledger_head WHERE id = 1
"""


def acknowledged_position(conn: psycopg.Connection[Any]) -> int:
    """The highest P such that Kafka has acknowledged every event with a position <= P."""
    row = conn.execute(_ACKNOWLEDGED_POSITION).fetchone()
    assert row is not None and row[0] is not None, "ledger_head has its one row"
    return int(row[0])


def partition_count(client: Any, topic: str, timeout_seconds: float) -> int | None:
    """The topic's partition count from ``client.list_topics`` (an AdminClient or a
    Producer); None while the topic is unknown or the broker does not answer."""
    try:
        described = client.list_topics(topic=topic, timeout=timeout_seconds).topics.get(topic)
    except KafkaException as error:
        _logger.warning("cannot describe topic %s: %s", topic, error)
        return None
    if described is None or described.error is not None or not described.partitions:
        return None
    return len(described.partitions)


class MarkerSender:
    """Sends one leader's markers: after each acknowledged batch, again every
    ``marker_interval_seconds``, and to partitions added to the topic later.

    Args:
        config: Poller settings.
        producer: The relay's producer; its metadata gives the partition count.
        produce: Queues one message on the topic (the relay's, which waits for room).
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        config: PollerConfig,
        producer: Any,
        produce: Callable[..., None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._producer = producer
        self._produce = produce
        self._clock = clock
        self.partitions = 0
        # None until this poller knows a safe position (it leads, or published a batch).
        self._position: int | None = None
        self._sent_at = float("-inf")
        self._partitions_checked_at = float("-inf")

    def lead(self, conn: psycopg.Connection[Any]) -> None:
        """Starts a term of leadership: learns the position to claim from the database
        and makes the markers and the partition count due at once."""
        self._position = acknowledged_position(conn)
        self._sent_at = float("-inf")
        self._partitions_checked_at = float("-inf")

    def acknowledged(self, position: int) -> None:
        """Kafka acknowledged every event up to ``position``: tells every partition."""
        self._position = max(self._position or 0, position)
        self.send()

    def send(self) -> None:
        """Queues a marker carrying the acknowledged position to every partition."""
        self._sent_at = self._clock()
        if not self._position:
            return
        headers = [
            (contract.HEADER_EVENT_TYPE, contract.MARKER_EVENT_TYPE.encode()),
            (contract.HEADER_POSITION, str(self._position).encode()),
        ]
        for partition in range(self.partitions):
            self._produce(value=b"", headers=headers, partition=partition)
        # Markers need no acknowledgement: a lost one is superseded by the next.
        self._producer.poll(0)

    def maybe_send(self) -> None:
        """Sends the markers again once ``marker_interval_seconds`` passed without any."""
        if self._clock() - self._sent_at >= self._config.marker_interval_seconds:
            self.send()

    def refresh_partitions_soon(self) -> None:
        """After a failure: the topic may have changed, so look at its next check."""
        self._partitions_checked_at = float("-inf")

    def maybe_refresh_partitions(self) -> None:
        """Re-reads the partition count when due; new partitions get markers at once."""
        now = self._clock()
        if now - self._partitions_checked_at < self._config.partition_refresh_seconds:
            return
        self._partitions_checked_at = now
        count = partition_count(
            self._producer, self._config.topic, self._config.kafka_step_seconds_max
        )
        # Partitions are only ever added; a smaller count is a stale answer.
        if count is not None and count > self.partitions:
            if self.partitions:
                _logger.info("topic %s grew to %d partitions", self._config.topic, count)
            self.partitions = count
            self.send()
