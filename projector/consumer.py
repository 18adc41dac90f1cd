"""The projector loop: Kafka events in, Elasticsearch documents and watermarks out.

One batch at a time, in this order, which is what makes reads consistent:

1. poll up to ``batch_size_max`` messages;
2. read the current documents of the batch's accounts (realtime mget), fold the
   batch's events onto them (``chronos.read_model.documents``) and bulk-write the
   changed account documents and the statement lines with a refresh (``refresh=true``
   by default, ``wait_for`` by configuration): when the call returns they are
   searchable;
3. only then write each partition's watermark (the highest marker position consumed
   there: a marker follows every event up to its position), so a reader that sees
   watermark P finds every event <= P;
4. only then commit the Kafka offsets. A crash before this point redelivers the batch,
   and every write above is idempotent and version-guarded, so that is harmless.

While Elasticsearch is unreachable the batch is retried (bounded, jittered backoff);
offsets are not committed meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from google.protobuf.message import DecodeError

from chronos import telemetry
from chronos.errors import ChronosError
from chronos.event_store.mapper import EventDecodeError
from chronos.metrics import (
    ES_BULK_FAILURES,
    ES_BULK_LATENCY,
    KAFKA_CONSUMER_LAG,
    PROJECTED_EVENTS,
    PROJECTION_GAPS_FILLED,
    PROJECTION_LAG,
    PROJECTION_RETENTION_GAPS,
    PROJECTION_SEARCH_LAG,
    PROJECTION_WATERMARK,
)
from chronos.outbox import contract
from chronos.read_model import ReadModelUnavailable
from chronos.read_model.documents import (
    AccountDocument,
    EventRecord,
    Outcome,
    fold_batch,
    record_from_envelope,
)
from chronos.read_model.es_writer import EsWriter, WatermarksFenced, WriteResult
from chronos.read_model.history import GAP_EVENTS_MAX, EventStoreUnavailable, StreamHistory
from chronos.read_model.watermark import APPLIED, SEARCHABLE
from chronos.v1 import events_pb2
from projector.config import ProjectorConfig

_logger = logging.getLogger(__name__)

_T = TypeVar("_T")
# How often the consumer lag gauge is refreshed (from librdkafka's cached offsets).
_CONSUMER_LAG_REPORT_SECONDS = 1.0
_SEARCH_LAG_SAMPLES_MAX = 10_000


class ProjectorError(ChronosError):
    """The projector cannot go on (undecodable event, topic missing, Kafka fatal error)."""


class DocumentCache:
    """Account documents as this process last wrote them, least recently used first out.

    A cached document is used only when the batch's first event of its account is the very
    next version (``version + 1``). Folding is deterministic, so the cached state then
    equals the stored one, even after a rebuild swapped the index (same events, same
    documents). Anything else (a redelivery, a gap, an account never seen) is read from
    Elasticsearch as before.
    """

    def __init__(self, size_max: int) -> None:
        self._size_max = size_max
        self._documents: OrderedDict[str, AccountDocument] = OrderedDict()

    def continuing(
        self, first_versions: dict[str, int]
    ) -> tuple[dict[str, AccountDocument | None], list[str]]:
        """Splits accounts into those with a usable cached document and the rest.

        Args:
            first_versions: Each account's first stream version in the batch.

        Returns:
            The usable documents by account, and the accounts to read.
        """
        found: dict[str, AccountDocument | None] = {}
        missing: list[str] = []
        for account_id, version in first_versions.items():
            document = self._documents.get(account_id)
            if document is not None and document.version + 1 == version:
                found[account_id] = document
            else:
                missing.append(account_id)
        return found, missing

    def remember(self, documents: Iterable[AccountDocument]) -> None:
        for document in documents:
            self._documents[document.account_id] = document
            self._documents.move_to_end(document.account_id)
        while len(self._documents) > self._size_max:
            self._documents.popitem(last=False)

    def clear(self) -> None:
        self._documents.clear()


class ProjectorStopped(ChronosError):
    """A stop was requested while a batch was still waiting for Elasticsearch."""


@dataclass(slots=True, kw_only=True)
class BatchReport:
    """What one step did (for logs, metrics and tests)."""

    messages: int = 0
    events: int = 0
    markers: int = 0
    write: WriteResult = field(default_factory=WriteResult)
    watermarks: dict[int, int] = field(default_factory=dict)
    outcomes: dict[Outcome, int] = field(default_factory=dict)
    # The offsets were handed to the consumer to commit (asynchronously).
    committed: bool = False
    # Seconds from the newest event's commit in PostgreSQL to its watermark being
    # written: the projection lag as a reader sees it.
    lag_seconds_max: float = 0.0


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
        self._writer = writer
        self._history = history
        self._config = config
        self._stop = stop or threading.Event()
        self._clock = clock
        self._partition_count = 0
        self._random = random.Random()
        # Applied and searchable positions per partition (this process's view).
        self._watermarks: dict[int, int] = {}
        # Applied watermarks a rebuild's fence refused, written with the next batch.
        self._applied_unwritten: dict[int, int] = {}
        # Found while assigning partitions (a callback must not raise): raised by step().
        self._failure: ProjectorError | None = None
        self._searchable: dict[int, int] = {}
        self._searchable_lock = threading.Lock()
        self._refresher_stop = threading.Event()
        self._refresh_wanted = threading.Event()
        self._refresher: threading.Thread | None = None
        # The documents this process wrote last (bounded), so that most batches need no
        # read of the current documents before folding.
        self._documents = DocumentCache(config.document_cache_size_max)
        # Commit times of applied events not yet searchable (bounded), for the search lag.
        self._not_searchable: list[datetime] = []
        self._lag_reported_monotonic = 0.0

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
            if self._stop.wait(1.0):
                raise ProjectorStopped("stopped while waiting for the topic")
        self._partition_count = count
        self._consumer.subscribe([self._config.topic], on_assign=self._on_assign)
        if self._config.refresh == "interval":
            self._refresher = threading.Thread(
                target=self._refresh_searches, name="search-refresher", daemon=True
            )
            self._refresher.start()

    def _topic_partition_count(self) -> int:
        try:
            metadata = self._consumer.list_topics(timeout=5.0)
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
        self._documents.clear()
        consumer.assign(self._starting_offsets(partitions))
        _logger.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def step(self, *, commit: bool = True) -> BatchReport:
        """Polls one batch and projects it.

        Args:
            commit: Commit the offsets at the end (tests pass False to simulate a crash
                between the Elasticsearch writes and the commit).
        """
        assert self._partition_count > 0, "start() first"
        # Block for the first message only, then take whatever else is already buffered:
        # consume(n, timeout) would wait for n messages or the whole timeout, adding up
        # to poll_timeout_seconds of lag to every event at low load.
        first = self._consumer.poll(self._config.poll_timeout_seconds)
        messages = [] if first is None else [first]
        if first is not None and self._config.batch_size_max > 1:
            messages.extend(
                self._consumer.consume(num_messages=self._config.batch_size_max - 1, timeout=0)
            )
        polled_ns = time.time_ns()
        if self._failure is not None:
            raise self._failure
        report = BatchReport(messages=len(messages))
        records: list[EventRecord] = []
        traceparents: list[str] = []
        offsets: dict[int, int] = {}
        for message in messages:
            if self._skip_error(message):
                continue
            partition = message.partition()
            offset = message.offset()
            assert partition is not None and offset is not None
            marker = self._marker_or_event(message, records, report, traceparents)
            if marker is not None:
                report.watermarks[partition] = max(report.watermarks.get(partition, 0), marker)
            offsets[partition] = offset + 1
        bulk_start_ns = time.time_ns()
        if records:
            report.write, report.outcomes = self._retrying(
                "writing documents", lambda: self._write_documents(records)
            )
            ES_BULK_LATENCY.observe((time.time_ns() - bulk_start_ns) / 1e9)
        bulk_end_ns = time.time_ns()
        written = self._write_applied_watermarks(report.watermarks)
        if records:
            visible_at = self._clock()
            newest = max(record.recorded_at for record in records)
            report.lag_seconds_max = (visible_at - newest).total_seconds()
            for record in records:
                PROJECTION_LAG.observe(max(0.0, (visible_at - record.recorded_at).total_seconds()))
            with self._searchable_lock:
                room = _SEARCH_LAG_SAMPLES_MAX - len(self._not_searchable)
                self._not_searchable.extend(r.recorded_at for r in records[:room])
            PROJECTED_EVENTS.inc(len(records))
        with self._searchable_lock:
            for partition, position in written.items():
                self._watermarks[partition] = max(self._watermarks.get(partition, 0), position)
        if self._watermarks:
            PROJECTION_WATERMARK.set(min(self._watermarks.values()))
        if commit and offsets:
            report.committed = self._commit(offsets)
        if self._config.refresh != "interval":
            # Bulks that refreshed (or waited for a refresh) are searchable already.
            self.make_searchable()
        elif first is None:
            # Idle: have the background refresher refresh now rather than at its next
            # tick. Not here: a refresh takes tens of ms under load, and the next bulk
            # (what GetAccount waits for) must not wait behind it.
            self._refresh_wanted.set()
        for traceparent in traceparents:
            # consume (poll → commit) continues the publish span; the bulk write is its child.
            consumed = telemetry.record_span(
                "kafka.consume",
                traceparent,
                polled_ns,
                time.time_ns(),
                {"messaging.system": "kafka", "messaging.destination.name": self._config.topic},
            )
            telemetry.record_span(
                "elasticsearch.bulk",
                consumed,
                bulk_start_ns,
                bulk_end_ns,
                {"db.system": "elasticsearch", "chronos.batch_events": len(records)},
            )
        self._maybe_report_consumer_lag()
        return report

    def _write_applied_watermarks(self, positions: dict[int, int]) -> dict[int, int]:
        """Writes this batch's applied watermarks and any a fence held back; returns
        what was written (nothing while a rebuild fences the watermarks)."""
        pending = dict(self._applied_unwritten)
        for partition, position in positions.items():
            pending[partition] = max(pending.get(partition, 0), position)
        if not pending:
            return {}
        try:
            self._retrying(
                "writing watermarks",
                lambda: self._writer.write_watermarks(
                    self._config.topic, self._partition_count, pending, kind=APPLIED
                ),
            )
        except WatermarksFenced:
            _logger.info("watermarks fenced by a rebuild's alias swap; holding them back")
            self._applied_unwritten = pending
            return {}
        self._applied_unwritten = {}
        return pending

    def _skip_error(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.fatal():
            raise ProjectorError(f"Kafka fatal error: {error}")
        if error.code() == KafkaError._AUTO_OFFSET_RESET:
            # Retention overtook the projector while it ran (or the topic was recreated).
            PROJECTION_RETENTION_GAPS.inc()
            raise ProjectorError(
                f"the next offset of {self._config.topic}[{message.partition()}] is gone "
                f"({error.str()}): events were deleted before they were projected; run "
                "`chronos projection rebuild`, then start the projector once with "
                "CHRONOS_PROJECTOR_START_AFTER_RETENTION=1"
            )
        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            _logger.warning("topic %s is gone: %s", self._config.topic, error)
        else:
            _logger.warning("consumer error: %s", error)
        return True

    def _starting_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Where each newly assigned partition starts: its committed offset, or the
        beginning when it has none.

        Unless retention deleted events this group never projected (a committed offset
        below the oldest one Kafka holds, or no commit and a partition that no longer
        starts at 0): skipping them would leave the read model silently wrong while
        later markers advance the watermarks, so the projector stops, unless the
        operator rebuilt the read model from the event store and said so
        (``start_after_retention``).
        """
        try:
            committed = self._consumer.committed(partitions, timeout=10)
            lows = [self._consumer.get_watermark_offsets(p, timeout=10)[0] for p in committed]
        except KafkaException as error:
            self._failure = ProjectorError(f"cannot read the assigned partitions' offsets: {error}")
            return partitions
        for partition, low in zip(committed, lows, strict=True):
            if partition.offset >= low:
                continue
            if partition.offset < 0 and low == 0:
                partition.offset = 0  # a new group on a partition Kafka holds whole
                continue
            if not self._config.start_after_retention:
                PROJECTION_RETENTION_GAPS.inc()
                shown = partition.offset if partition.offset >= 0 else "none"
                self._failure = ProjectorError(
                    f"partition {partition.partition} of {self._config.topic}: Kafka deleted "
                    f"the offsets before {low} (retention) and this group's committed offset "
                    f"is {shown}: events were deleted before they were projected. Run "
                    "`chronos projection rebuild` (it replays the event store), then start "
                    "the projector once with CHRONOS_PROJECTOR_START_AFTER_RETENTION=1"
                )
            partition.offset = low
        return committed

    def _marker_or_event(
        self,
        message: Message,
        records: list[EventRecord],
        report: BatchReport,
        traceparents: list[str],
    ) -> int | None:
        """Returns a marker's position; collects an event into ``records``.

        Only markers move a watermark. An event's own position says nothing about the
        positions below it: after a producer timeout a later event of the partition can
        arrive before an earlier one that is published again. A marker is sent only once
        every event up to its position is acknowledged, so it follows them in the log.
        """
        headers = contract.headers_dict(message.headers())
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        if headers.get(contract.HEADER_EVENT_TYPE) == contract.MARKER_EVENT_TYPE:
            report.markers += 1
            try:
                return int(headers[contract.HEADER_POSITION])
            except (KeyError, ValueError):
                # A marker carries no data, so a malformed one loses nothing.
                _logger.error("marker without a valid position at %s; ignored", where)
                return None
        value = message.value()
        try:
            envelope = events_pb2.EventEnvelope.FromString(value or b"")
            record = record_from_envelope(envelope)
        except (DecodeError, EventDecodeError) as error:
            # Skipping would leave the read model silently wrong; stop instead, so the
            # operator deploys code that understands the event (offsets stay put).
            raise ProjectorError(f"cannot decode the event at {where}: {error}") from error
        records.append(record)
        report.events += 1
        traceparent = headers.get(contract.HEADER_TRACEPARENT, "")
        if traceparent:
            traceparents.append(traceparent)
        return None

    def _write_documents(
        self, records: list[EventRecord]
    ) -> tuple[WriteResult, dict[Outcome, int]]:
        current = self._current_documents(records)
        records = self._with_gaps_filled(current, records)
        documents = fold_batch(current, records)
        if documents.outcomes[Outcome.GAP] or documents.outcomes[Outcome.ORPHAN]:
            raise ProjectorError(
                "the event store lacks versions of a stream whose later events Kafka "
                "delivered; the projector stops rather than fold across the gap"
            )
        result = self._writer.write_documents(
            documents.accounts,
            documents.transactions,
            refresh=False if self._config.refresh == "interval" else self._config.refresh,
        )
        if not result.accounts_stale:
            # Else another writer got there first, and what it stored is what counts: the
            # cache keeps the states before this batch, which no later event continues.
            self._documents.remember(documents.accounts)
        return result, documents.outcomes

    def _with_gaps_filled(
        self, current: dict[str, AccountDocument | None], records: list[EventRecord]
    ) -> list[EventRecord]:
        """``records``, where an account's events skip a version, with that account's
        events replaced by its stream read from the event store up to the batch's
        newest version of it: the fold then sees every version in order."""
        next_version = {
            account_id: (0 if document is None else document.version) + 1
            for account_id, document in current.items()
        }
        gaps: dict[str, int] = {}
        for record in records:
            expected = next_version[record.stream_id]
            if record.stream_id in gaps:
                gaps[record.stream_id] = max(gaps[record.stream_id], record.stream_version)
            elif record.stream_version == expected:
                next_version[record.stream_id] = expected + 1
            elif record.stream_version > expected:
                gaps[record.stream_id] = record.stream_version
        if not gaps:
            return records
        filled = [record for record in records if record.stream_id not in gaps]
        for account_id, up_to_version in gaps.items():
            document = current[account_id]
            after_version = 0 if document is None else document.version
            if up_to_version - after_version > GAP_EVENTS_MAX:
                raise ProjectorError(
                    f"account {account_id}: the document is at version {after_version} and "
                    f"Kafka delivered version {up_to_version}; run `chronos projection rebuild`"
                )
            filled.extend(
                self._history.events(
                    account_id, after_version=after_version, up_to_version=up_to_version
                )
            )
        PROJECTION_GAPS_FILLED.inc(len(gaps))
        _logger.info("filled version gaps of %d accounts from the event store", len(gaps))
        return filled

    def _current_documents(self, records: list[EventRecord]) -> dict[str, AccountDocument | None]:
        """The stored document of each account of ``records``: cached, else read."""
        first_versions: dict[str, int] = {}
        for record in records:
            first_versions.setdefault(record.stream_id, record.stream_version)
        current, missing = self._documents.continuing(first_versions)
        if missing:
            current.update(self._writer.get_accounts(missing))
        return current

    def _retrying(self, what: str, action: Callable[[], _T]) -> _T:
        """Runs ``action``, retrying while Elasticsearch is unavailable (bounded)."""
        for attempt in range(self._config.retries_max + 1):
            try:
                return action()
            except (ReadModelUnavailable, EventStoreUnavailable) as error:
                ES_BULK_FAILURES.inc()
                if attempt == self._config.retries_max:
                    raise
                backoff = min(self._config.retry_backoff_seconds_max, 0.05 * 2**attempt)
                delay = backoff * self._random.uniform(0.5, 1.0)
                _logger.warning(
                    "%s failed (attempt %d of %d), retrying in %.2f s: %s",
                    what,
                    attempt + 1,
                    self._config.retries_max + 1,
                    delay,
                    error,
                )
                if self._stop.wait(delay):
                    raise ProjectorStopped(f"stopped while retrying {what}") from error
        raise AssertionError("unreachable")

    def _commit(self, offsets: dict[int, int]) -> bool:
        partitions = [
            TopicPartition(self._config.topic, partition, offset)
            for partition, offset in sorted(offsets.items())
        ]
        try:
            # Not waited for: the next batch need not wait for the broker's answer (a
            # round trip per batch, 7% of the loop at 330 transfers/s). librdkafka sends
            # commits in order and close() waits for those in flight; one lost to a
            # crash only means its events are applied again, which is harmless.
            self._consumer.commit(offsets=partitions, asynchronous=True)
        except KafkaException as error:
            # Typically a rebalance took the partitions away: their new owner re-reads
            # from the last committed offsets, and re-applying is harmless.
            _logger.warning("offset commit failed, the batch will be redelivered: %s", error)
            return False
        return True

    def make_searchable(self) -> None:
        """Advances the searchable watermarks to the applied ones, refreshing the indices
        first when the bulks did not (interval mode). Thread-safe: the background
        refresher calls it every search_refresh_interval_seconds while the main loop
        keeps applying batches, so a refresh never holds up the next bulk."""
        with self._searchable_lock:
            pending = {
                partition: position
                for partition, position in self._watermarks.items()
                if position > self._searchable.get(partition, -1)
            }
            samples, self._not_searchable = self._not_searchable, []
        if not pending:
            return
        if self._config.refresh == "interval":
            # Everything up to `pending` was acknowledged before this refresh starts, so
            # the refresh makes it searchable.
            self._retrying("refreshing", self._writer.refresh_data)
        try:
            self._retrying(
                "writing searchable watermarks",
                lambda: self._writer.write_watermarks(
                    self._config.topic, self._partition_count, pending, kind=SEARCHABLE
                ),
            )
        except WatermarksFenced:
            # Tried again at the next refresh: the positions stay pending.
            with self._searchable_lock:
                self._not_searchable.extend(samples)
            return
        with self._searchable_lock:
            for partition, position in pending.items():
                self._searchable[partition] = max(self._searchable.get(partition, 0), position)
        searchable_at = self._clock()
        for recorded_at in samples:
            PROJECTION_SEARCH_LAG.observe(max(0.0, (searchable_at - recorded_at).total_seconds()))

    def _refresh_searches(self) -> None:
        """Background refresher (interval mode): bounded by the stop event."""
        interval = self._config.search_refresh_interval_seconds
        while not self._refresher_stop.is_set():
            # Every interval, or sooner when the main loop found nothing to apply.
            self._refresh_wanted.wait(interval)
            self._refresh_wanted.clear()
            if self._refresher_stop.is_set():
                return
            started = time.monotonic()
            try:
                self.make_searchable()
            except ChronosError as error:
                # The next tick retries; searches wait (PROJECTION_BEHIND) meanwhile.
                _logger.warning("making the projection searchable failed: %s", error)
            # At most one refresh per interval, idle or not: each refresh writes a new
            # segment that Elasticsearch must later merge.
            self._refresher_stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def _maybe_report_consumer_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_reported_monotonic < _CONSUMER_LAG_REPORT_SECONDS:
            return
        self._lag_reported_monotonic = now
        try:
            for partition in self._consumer.position(self._consumer.assignment()):
                _low, high = self._consumer.get_watermark_offsets(partition, cached=True)
                if partition.offset >= 0 and high >= 0:
                    KAFKA_CONSUMER_LAG.labels(str(partition.partition)).set(
                        max(0, high - partition.offset)
                    )
        except KafkaException as error:
            _logger.debug("consumer lag unavailable: %s", error)

    def close(self) -> None:
        """Leaves the group without committing anything further."""
        self._refresher_stop.set()
        self._refresh_wanted.set()
        if self._refresher is not None:
            self._refresher.join(timeout=30)
        self._consumer.close()


def describe(report: BatchReport) -> dict[str, Any]:
    """A log-friendly summary of a batch."""
    return {
        "messages": report.messages,
        "events": report.events,
        "markers": report.markers,
        "accounts_written": report.write.accounts_written,
        "accounts_stale": report.write.accounts_stale,
        "lines_written": report.write.transactions_written,
        "lines_duplicate": report.write.transactions_duplicate,
        "lag_seconds_max": round(report.lag_seconds_max, 4),
    }
