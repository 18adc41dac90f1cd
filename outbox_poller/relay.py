"""Relays outbox rows to Kafka: at least once, in position order, one leader at a time.

Correctness points, each handled here on purpose:

* **Never skip a late commit.** The relay never keeps a "last position seen" cursor: every
  round reads the rows that are still *unpublished* (``published_at IS NULL``, a partial
  index), lowest position first. A row whose transaction commits after higher positions
  were published is simply found on the next round. (The writer also hands out positions
  in commit order, so this cannot reorder one account's events; the relay does not rely
  on it.)
* **Mark only after the broker acknowledged.** Rows are marked published only for the
  messages whose delivery report succeeded. A crash in between republishes them:
  duplicates are possible, loss is not; the projector deduplicates.
* **One leader.** A session-level advisory lock elects the publishing poller; standbys
  retry every ``standby_check_seconds``. If the leader's database session dies, the lock
  is released and a standby takes over. The session is bounded
  (``chronos.event_store.sessions``): the server ends it when the leader's host stops
  answering TCP keepalives (a partition) or when the leader sends no statement for
  ``session_idle_timeout_seconds`` (a stopped process), so a stalled leader cannot hold
  the lock for the two hours TCP would take to give up. The leader marks rows on that
  same session, so a leader that lost its lock stops at its next statement and comes
  back as a standby.
* **Watermark markers.** After each acknowledged batch, and again while idle, a marker
  carrying the highest position Kafka has acknowledged with all below it goes to every
  partition, including partitions added later (``outbox_poller.markers``).
* **Bounded, jittered waits.** A lost database session and a round Kafka failed are
  retried after waits from the one retry policy (``chronos.retry``), capped by
  ``kafka_backoff_seconds_max`` and interrupted by the stop event.

The SQL on the outbox table is in ``outbox_poller.outbox``; the producer's settings and
the topic's creation in ``outbox_poller.producer``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from datetime import datetime
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer

from chronos import telemetry
from chronos.event_store import mapper
from chronos.event_store.writer import NOTIFY_CHANNEL
from chronos.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_LEADER,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PUBLISH_LATENCY,
    OUTBOX_PUBLISHED,
)
from chronos.outbox import contract
from chronos.retry import Backoff
from outbox_poller import outbox
from outbox_poller.checkpoints import checkpoint_publisher
from outbox_poller.config import PollerConfig
from outbox_poller.markers import MarkerSender
from outbox_poller.outbox import OutboxRow
from outbox_poller.producer import KafkaUnavailable, ensure_topic, producer_settings

_logger = logging.getLogger(__name__)

# How often the leader counts the backlog for the metrics (a cheap index-only scan).
_BACKLOG_REPORT_SECONDS = 1.0
# Arbitrary constant: the key of the advisory lock that elects the publishing poller.
LEADER_LOCK_KEY = 0x4F_55_54_42_4F_58
# The wait before the first reconnect to the database: short, because most losses of
# the session are a blip (a restart, a failover), unless the configured cap is shorter.
_RECONNECT_FIRST_STEP_SECONDS = 0.05


def reconnect_backoff(config: PollerConfig) -> Backoff:
    """The waits between attempts to open the poller's database session (unbounded:
    the poller waits for its database for as long as it runs)."""
    cap_seconds = config.kafka_backoff_seconds_max
    return Backoff(
        base_seconds=min(_RECONNECT_FIRST_STEP_SECONDS, cap_seconds), cap_seconds=cap_seconds
    )


def kafka_backoff(config: PollerConfig) -> Backoff:
    """The leader's waits between publishing rounds that Kafka failed (unbounded: the
    leader keeps its session and waits for Kafka for as long as it runs)."""
    cap_seconds = config.kafka_backoff_seconds_max
    return Backoff(
        base_seconds=min(config.idle_wait_seconds_min, cap_seconds), cap_seconds=cap_seconds
    )


class OutboxRelay:
    """Publishes unpublished outbox rows while holding leadership.

    Args:
        config: Poller settings.
        producer: Injected for tests; built from the config otherwise.
    """

    def __init__(
        self,
        config: PollerConfig,
        *,
        producer: Producer | None = None,
    ) -> None:
        self._config = config
        self._producer = producer or Producer(
            producer_settings(config.kafka_bootstrap, config.kafka_security)
        )
        self._markers = MarkerSender(config, self._producer, self._produce)
        self._checkpoints = checkpoint_publisher(config, self._producer)
        self._last_prune_monotonic = 0.0
        self._last_backlog_monotonic = 0.0
        # Whether the server records commit times (read once, on first use).
        self._commit_times: bool | None = None
        self.is_leader = False

    def ensure_topic(self) -> None:
        """Creates the topic when missing and learns its partition count.

        Raises:
            KafkaUnavailable: the broker did not answer or refused.
        """
        config = self._config
        self._markers.partitions = ensure_topic(
            config.kafka_bootstrap,
            config.topic,
            config.partitions,
            config.replication_factor,
            config.kafka_security,
        )

    def run(self, stop: threading.Event) -> None:
        """Runs until ``stop`` is set: elect, publish, wait for work, prune."""
        reconnect_waits = reconnect_backoff(self._config).waits()
        while not stop.is_set():
            try:
                with self._connect() as conn:
                    self._lead(conn, stop)
                reconnect_waits.reset()
            except psycopg.OperationalError as error:
                if self.is_leader:
                    _logger.warning("lost the leadership with the database session: %s", error)
                else:
                    _logger.warning("database unavailable, retrying: %s", error)
                self.is_leader = False
                OUTBOX_LEADER.set(0)
                stop.wait(reconnect_waits.next_seconds())
        self._producer.flush(self._config.flush_timeout_seconds)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._config.pg_dsn,
            autocommit=True,
            connect_timeout=10,
            application_name="chronos-outbox-poller",
            # This session only marks rows published and prunes them. A mark lost to a
            # server crash republishes its rows, which the projector ignores as
            # duplicates, so its commits need not wait for the WAL flush.
            **self._config.session_bounds.connection_kwargs(
                extra_options="-c synchronous_commit=off"
            ),
        )

    def _lead(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        """Waits to be elected, then publishes until ``stop`` is set."""
        if not self._elected(conn, stop):
            return
        config = self._config
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        idle_wait_seconds = config.idle_wait_seconds_min
        kafka_waits = kafka_backoff(config).waits()
        while not stop.is_set():
            try:
                if not self._markers.partitions:
                    self.ensure_topic()
                self._markers.maybe_refresh_partitions()
                published = self.publish_batch(conn)
                self._markers.maybe_send()
                if self._checkpoints is not None:
                    self._checkpoints.maybe_publish(conn)
                kafka_waits.reset()
            except KafkaUnavailable as error:
                _logger.warning("Kafka unavailable, backing off: %s", error)
                self._markers.refresh_partitions_soon()
                stop.wait(kafka_waits.next_seconds())
                continue
            self._maybe_prune(conn)
            self._maybe_report_backlog(conn)
            if published:
                # Busy: go straight back for more (batches grow under load by themselves).
                idle_wait_seconds = config.idle_wait_seconds_min
                continue
            # Idle: wait for a NOTIFY from a committing writer, or poll after a growing
            # wait in case a notification was missed.
            for _ in conn.notifies(timeout=idle_wait_seconds, stop_after=1):
                idle_wait_seconds = config.idle_wait_seconds_min
                break
            else:
                idle_wait_seconds = min(idle_wait_seconds * 2, config.idle_wait_seconds_max)

    def _elected(self, conn: psycopg.Connection[Any], stop: threading.Event) -> bool:
        """Waits for the leadership lock (standby meanwhile); False when stopped first."""
        while not stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                self.is_leader = True
                OUTBOX_LEADER.set(1)
                _logger.info("outbox poller is the leader")
                self._markers.lead(conn)
                if self._checkpoints is not None:
                    self._checkpoints.lead()
                return True
            self.is_leader = False
            stop.wait(self._config.standby_check_seconds)
        return False

    def fetch_unpublished(self, conn: psycopg.Connection[Any]) -> list[OutboxRow]:
        """The next batch of unpublished rows, lowest position first."""
        if self._commit_times is None:
            self._commit_times = outbox.commit_times_tracked(conn)
        return outbox.fetch_unpublished(
            conn, self._config.batch_size_max, commit_times=self._commit_times
        )

    def publish_batch(self, conn: psycopg.Connection[Any]) -> int:
        """Publishes one batch of unpublished rows and marks the acknowledged ones.

        Returns:
            How many rows were published and marked.

        Raises:
            KafkaUnavailable: some row was not acknowledged (nothing after it is marked).
            psycopg.OperationalError: the session (and so the leadership) was lost.
        """
        rows = self.fetch_unpublished(conn)
        if not rows:
            return 0
        acknowledged = self._produce_and_flush(conn, rows)
        # Mark the acknowledged prefix only: marking a row after an unacknowledged one
        # would let a retry publish them out of order.
        prefix: list[int] = []
        for row in rows:
            if row.position not in acknowledged:
                break
            prefix.append(row.position)
        if prefix:
            self.mark_published(conn, prefix)
            OUTBOX_PUBLISHED.inc(len(prefix))
            # Every row below the batch was published before it (the batch is the lowest
            # unpublished rows of one snapshot), so all up to the prefix's end is acknowledged.
            self._markers.acknowledged(prefix[-1])
        if len(prefix) < len(rows):
            raise KafkaUnavailable(
                f"{len(rows) - len(prefix)} of {len(rows)} rows not acknowledged"
            )
        return len(prefix)

    def mark_published(self, conn: psycopg.Connection[Any], positions: list[int]) -> None:
        """Marks the rows at ``positions`` published (Kafka acknowledged them)."""
        outbox.mark_published(conn, positions)

    def _produce_and_flush(self, conn: psycopg.Connection[Any], rows: list[OutboxRow]) -> set[int]:
        acknowledged: set[int] = set()
        failures: list[str] = []
        start_ns = time.time_ns()

        def on_delivery(row: OutboxRow, error: KafkaError | None, _message: Message) -> None:
            # Runs inside flush()/poll(); it must not raise.
            if error is None:
                acknowledged.add(row.position)
                committed_at = row.committed_at
                if committed_at is None:
                    recorded_at = row.headers.get(contract.HEADER_RECORDED_AT)
                    committed_at = datetime.fromisoformat(recorded_at) if recorded_at else None
                if committed_at is not None:
                    OUTBOX_PUBLISH_LATENCY.observe(max(0.0, time.time() - committed_at.timestamp()))
            else:
                failures.append(str(error))

        spans: list[tuple[Any, OutboxRow]] = []
        for row in rows:
            headers = dict(row.headers)
            parent = row.headers.get(contract.HEADER_TRACEPARENT, "")
            if parent:
                # The publish span continues the command's trace; the consumer continues
                # from the publish span, so the header carries the latter.
                span = _publish_span(parent, row, start_ns, self._config.topic)
                if span is not None:
                    spans.append((span, row))
                    headers[contract.HEADER_TRACEPARENT] = telemetry.traceparent_of(span)
            self._produce(
                key=row.key.encode(),
                value=mapper.envelope_from_outbox(row.key, row.payload, row.headers),
                headers=[(name, value.encode()) for name, value in headers.items()],
                on_delivery=functools.partial(on_delivery, row),
            )
        remaining = self._flush(conn)
        for span, row in spans:
            span.set_attribute("chronos.acknowledged", row.position in acknowledged)
            span.end()
        if remaining or failures:
            _logger.warning(
                "%d messages unacknowledged, %d failed: %s", remaining, len(failures), failures[:3]
            )
        return acknowledged

    def _flush(self, conn: psycopg.Connection[Any]) -> int:
        """Waits up to the flush timeout for the delivery reports; returns how many are
        missing. While Kafka is slow the session hears from the poller between slices,
        so its idle timeout ends only a stalled leader's session, and a leader that lost
        its session stops waiting for Kafka."""
        deadline = time.monotonic() + self._config.flush_timeout_seconds
        while True:
            slice_seconds = min(self._config.kafka_step_seconds_max, deadline - time.monotonic())
            remaining: int = self._producer.flush(max(0.0, slice_seconds))
            if not remaining:
                return 0
            conn.execute("SELECT 1")
            if time.monotonic() >= deadline:
                return remaining

    def _produce(self, **kwargs: Any) -> None:
        for _ in range(1000):
            try:
                self._producer.produce(self._config.topic, **kwargs)
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                self._producer.poll(0.05)
        raise KafkaUnavailable("the producer queue stayed full")

    def _maybe_report_backlog(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self._last_backlog_monotonic < _BACKLOG_REPORT_SECONDS:
            return
        self._last_backlog_monotonic = now
        count, oldest_age_seconds = outbox.backlog(conn)
        OUTBOX_BACKLOG.set(count)
        OUTBOX_OLDEST_AGE.set(oldest_age_seconds)

    def _maybe_prune(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self._last_prune_monotonic < self._config.prune_interval_seconds:
            return
        self._last_prune_monotonic = now
        pruned = outbox.prune_published(conn, self._config.retention_seconds)
        if pruned:
            _logger.info("pruned %d published outbox rows", pruned)


def _publish_span(traceparent: str, row: OutboxRow, start_ns: int, topic: str) -> Any:
    parent = telemetry.context_from_traceparent(traceparent)
    if parent is None:
        return None
    return telemetry.tracer(__name__).start_span(
        "outbox.publish",
        context=parent,
        start_time=start_ns,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "chronos.position": row.position,
        },
    )
