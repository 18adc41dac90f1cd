"""How far behind the projector is: each applied event's projection lag, and the
consumer lag of each assigned partition."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from confluent_kafka import Consumer, KafkaException

from chronos.metrics import KAFKA_CONSUMER_LAG, PROJECTION_LAG

_logger = logging.getLogger(__name__)

# How often the consumer lag gauge is refreshed (from librdkafka's cached offsets).
_CONSUMER_LAG_REPORT_SECONDS = 1.0


def observe_projection_lag(recorded_at: list[datetime], visible_at: datetime) -> float:
    """Observes each event's lag from its commit to ``visible_at``.

    Returns:
        The newest event's lag in seconds (what a reader of it waited).
    """
    assert recorded_at, "a batch with events"
    for committed_at in recorded_at:
        PROJECTION_LAG.observe(max(0.0, (visible_at - committed_at).total_seconds()))
    return (visible_at - max(recorded_at)).total_seconds()


class ConsumerLagReporter:
    """Sets the consumer lag gauge of each assigned partition, at most once a second.

    Args:
        consumer: The projector's consumer.
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(self, consumer: Consumer, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._consumer = consumer
        self._clock = clock
        self._reported_at = float("-inf")

    def maybe_report(self) -> None:
        """Reports the lags when due; Kafka errors only skip a report."""
        now = self._clock()
        if now - self._reported_at < _CONSUMER_LAG_REPORT_SECONDS:
            return
        self._reported_at = now
        try:
            for partition in self._consumer.position(self._consumer.assignment()):
                _low, high = self._consumer.get_watermark_offsets(partition, cached=True)
                if partition.offset >= 0 and high >= 0:
                    KAFKA_CONSUMER_LAG.labels(str(partition.partition)).set(
                        max(0, high - partition.offset)
                    )
        except KafkaException as error:
            _logger.debug("consumer lag unavailable: %s", error)
