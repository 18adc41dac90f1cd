"""The projector loop: Kafka events in, Elasticsearch documents and watermarks out.

One batch at a time, in this order, which is what makes reads consistent:

1. poll up to ``batch_size_max`` messages (``projector.batch`` sorts them out);
2. read the current documents of the batch's accounts (cached or a realtime mget),
   fold the batch's events onto them and bulk-write the changed account documents and
   the statement lines (``projector.applier``);
3. only then write each partition's applied watermark (the highest marker position
   consumed there: a marker follows every event up to its position), so a reader that
   sees watermark P finds every event <= P (``projector.watermarks``);
4. only then commit the Kafka offsets. A crash before this point redelivers the batch,
   and every write above is idempotent and version-guarded, so that is harmless.

The searchable watermark follows once a refresh made the documents searchable: each
bulk refreshes (``refresh=true`` or ``wait_for`` by configuration), or by default a
background thread refreshes at most every ``search_refresh_interval_seconds``
(``projector.refresher``).

While Elasticsearch is unreachable the batch is retried (``projector.retrying``);
offsets are not committed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from chronos import telemetry
from chronos.metrics import ES_BULK_LATENCY, PROJECTED_EVENTS
from chronos.read_model.es_writer import EsWriter
from chronos.read_model.history import StreamHistory
from projector.applier import DocumentApplier
from projector.batch import read_batch
from projector.cache import DocumentCache
from projector.config import ProjectorConfig
from projector.errors import ProjectorError, ProjectorStopped
from projector.lag import ConsumerLagReporter, observe_projection_lag
from projector.offsets import starting_offsets
from projector.refresher import SearchRefresher
from projector.report import BatchReport
from projector.retrying import Retrying, backoff
from projector.watermarks import ProjectedWatermarks

_logger = logging.getLogger(__name__)

# How long one topic metadata request may take, and the wait between two while the
# topic does not exist yet.
_METADATA_TIMEOUT_SECONDS = 5.0
_TOPIC_CHECK_SECONDS = 1.0


class Projector:
    """Consumes the events topic and keeps the read model up to date.

    Args:
        consumer: A consumer built with ``ProjectorConfig.consumer_settings()``, not yet
            subscribed.
        writer: The Elasticsearch writer (through the aliases).
        history: The event store's streams, read when an account's events arrive with a
            version missing in between (see ``chronos.read_model.history``).
        config: Topic, batch size, retry limits.
        stop: Set to stop after the current batch.
        clock: Wall clock (injected so tests control it).
    """

    def __init__(
        self,
        consumer: Consumer,
        writer: EsWriter,
        config: ProjectorConfig,
        *,
        history: StreamHistory,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._consumer = consumer
        self._config = config
        self._clock = clock
        self._partition_count = 0
        # Found while assigning partitions (a callback must not raise): raised by step().
        self._failure: ProjectorError | None = None
        self._stop = stop or threading.Event()
        self._retrying = Retrying(backoff(config), self._stop)
        # The documents this process wrote last (bounded), so that most batches need no
        # read of the current documents before folding.
        self._cache = DocumentCache(config.document_cache_size_max)
        interval_mode = config.refresh == "interval"
        self._applier = DocumentApplier(
            writer, history, self._cache, refresh=False if interval_mode else config.refresh
        )
        self._watermarks = ProjectedWatermarks(
            writer,
            config.topic,
            partition_count=lambda: self._partition_count,
            retrying=self._retrying,
            refresh_first=interval_mode,
            clock=clock,
        )
        self._refresher = (
            SearchRefresher(self.make_searchable, config.search_refresh_interval_seconds)
            if interval_mode
            else None
        )
        self._consumer_lag = ConsumerLagReporter(consumer)

    @property
    def partition_count(self) -> int:
        return self._partition_count

    def start(self) -> None:
        """Waits (bounded) for the topic to exist, then subscribes.

        Raises:
            ProjectorError: the topic did not appear in ``topic_wait_seconds_max``.
            ProjectorStopped: stop was requested while waiting.
        """
        deadline = time.monotonic() + self._config.topic_wait_seconds_max
        while True:
            count = self._topic_partition_count()
            if count > 0:
                break
            if time.monotonic() >= deadline:
                raise ProjectorError(
                    f"topic {self._config.topic} does not exist after "
                    f"{self._config.topic_wait_seconds_max:.0f} s (the outbox poller creates it)"
                )
            _logger.info("waiting for topic %s to be created", self._config.topic)
            if self._stop.wait(_TOPIC_CHECK_SECONDS):
                raise ProjectorStopped("stopped while waiting for the topic")
        self._partition_count = count
        self._consumer.subscribe([self._config.topic], on_assign=self._on_assign)
        if self._refresher is not None:
            self._refresher.start()

    def _topic_partition_count(self) -> int:
        try:
            metadata = self._consumer.list_topics(timeout=_METADATA_TIMEOUT_SECONDS)
        except KafkaException as error:
            _logger.warning("cannot read topic metadata: %s", error)
            return 0
        topic = metadata.topics.get(self._config.topic)
        if topic is None or topic.error is not None:
            return 0
        return len(topic.partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions can be added to a topic; watermark documents record the count so
        # readers know how many partitions must reach a position.
        count = self._topic_partition_count()
        if count > self._partition_count:
            self._partition_count = count
        # Another process may have projected these partitions meanwhile.
        self._cache.clear()
        assigned, failure = starting_offsets(
            consumer,
            partitions,
            topic=self._config.topic,
            start_after_retention=self._config.start_after_retention,
        )
        if failure is not None:
            self._failure = failure
        consumer.assign(assigned)
        _logger.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def step(self, *, commit: bool = True) -> BatchReport:
        """Polls one batch and projects it.

        Args:
            commit: Commit the offsets at the end (tests pass False to simulate a crash
                between the Elasticsearch writes and the commit).
        """
        assert self._partition_count > 0, "start() first"
        messages = self._poll()
        polled_ns = time.time_ns()
        if self._failure is not None:
            raise self._failure
        batch = read_batch(messages, self._config.topic)
        records = batch.records
        report = BatchReport(
            messages=len(messages),
            events=len(records),
            markers=batch.markers,
            watermarks=batch.watermarks,
        )
        bulk_start_ns = time.time_ns()
        if records:
            report.write, report.outcomes = self._retrying(
                "writing documents", lambda: self._applier.apply(records, batch.events)
            )
            ES_BULK_LATENCY.observe((time.time_ns() - bulk_start_ns) / 1e9)
        bulk_end_ns = time.time_ns()
        written = self._watermarks.write_applied(batch.watermarks)
        recorded_at = [record.recorded_at for record in records]
        if recorded_at:
            report.lag_seconds_max = observe_projection_lag(recorded_at, self._clock())
            PROJECTED_EVENTS.inc(len(recorded_at))
        self._watermarks.record_applied(written, recorded_at)
        if commit and batch.offsets:
            report.committed = self._commit(batch.offsets)
        self._advance_searchable(idle=not messages)
        _record_spans(
            batch.traceparents,
            self._config.topic,
            polled_ns,
            (bulk_start_ns, bulk_end_ns),
            len(records),
        )
        self._consumer_lag.maybe_report()
        return report

    def _poll(self) -> list[Message]:
        # Block for the first message only, then take whatever else is already buffered:
        # consume(n, timeout) would wait for n messages or the whole timeout, adding up
        # to poll_timeout_seconds of lag to every event at low load.
        first = self._consumer.poll(self._config.poll_timeout_seconds)
        if first is None:
            return []
        messages = [first]
        if self._config.batch_size_max > 1:
            messages.extend(
                self._consumer.consume(num_messages=self._config.batch_size_max - 1, timeout=0)
            )
        return messages

    def _advance_searchable(self, *, idle: bool) -> None:
        if self._refresher is None:
            # Bulks that refreshed (or waited for a refresh) are searchable already.
            self.make_searchable()
        elif idle:
            # Have the background refresher refresh now rather than at its next tick.
            # Not here: a refresh is slow under load, and the next bulk (what GetAccount
            # waits for) must not wait behind it.
            self._refresher.wake()

    def _commit(self, offsets: dict[int, int]) -> bool:
        partitions = [
            TopicPartition(self._config.topic, partition, offset)
            for partition, offset in sorted(offsets.items())
        ]
        try:
            # Not waited for: the next batch need not wait for the broker's answer (a
            # round trip per batch, a noticeable share of the loop under load).
            # librdkafka sends commits in order and close() waits for those in flight;
            # one lost to a crash only means its events are applied again, which is
            # harmless.
            self._consumer.commit(offsets=partitions, asynchronous=True)
        except KafkaException as error:
            # Typically a rebalance took the partitions away: their new owner re-reads
            # from the last committed offsets, and re-applying is harmless.
            _logger.warning("offset commit failed, the batch will be redelivered: %s", error)
            return False
        return True

    def make_searchable(self) -> None:
        """Advances the searchable watermarks to the applied ones, refreshing the indices
        first when the bulks did not (interval mode). Thread-safe."""
        self._watermarks.make_searchable()

    def close(self) -> None:
        """Leaves the group without committing anything further."""
        if self._refresher is not None:
            self._refresher.stop()
        self._consumer.close()


def _record_spans(
    traceparents: list[str],
    topic: str,
    polled_ns: int,
    bulk_ns: tuple[int, int],
    events: int,
) -> None:
    """Continues each event's trace: consume (poll → commit) continues the publish span,
    and the bulk write is its child."""
    for traceparent in traceparents:
        consumed = telemetry.record_span(
            "kafka.consume",
            traceparent,
            polled_ns,
            time.time_ns(),
            {"messaging.system": "kafka", "messaging.destination.name": topic},
        )
        telemetry.record_span(
            "elasticsearch.bulk",
            consumed,
            bulk_ns[0],
            bulk_ns[1],
            {"db.system": "elasticsearch", "chronos.batch_events": events},
        )
