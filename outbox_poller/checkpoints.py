"""Signed checkpoints of the hash chain, published by the poller's leader (docs/audit.md).

Every ``interval_events`` published events, or every ``interval_seconds`` when any were
published since the last one, the leader signs ``{position, chain_hash, recorded_at,
key_id}`` of the highest position Kafka has acknowledged with everything below it
(``outbox_poller.markers.acknowledged_position``), and publishes it to the checkpoints
topic, created with unlimited retention so no checkpoint ever ages out. A checkpoint
therefore never names a position whose events are not published yet, and a new leader
signs one at once (its predecessor's last may have been lost with it).

The signing key never reaches PostgreSQL: someone who can rewrite the events and their
stored hashes cannot forge the checkpoints that ``chronos verify`` compares them with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from chronos.audit.checkpoint import Checkpoint, encode_signed, key_id
from chronos.kafka_client import KafkaSecurity, kafka_client_config
from chronos.metrics import CHECKPOINT_AGE, CHECKPOINT_LAG
from chronos.security.tokens import load_signing_key
from outbox_poller.config import CheckpointPolicy, PollerConfig
from outbox_poller.markers import acknowledged_position
from outbox_poller.producer import KafkaUnavailable

_logger = logging.getLogger(__name__)

# How often the leader looks whether a checkpoint is due (one small query): checkpoints
# are rare, and the relay's loop runs once per batch.
_CHECK_SECONDS_MAX = 1.0
_ADMIN_TIMEOUT_SECONDS = 10

_HEAD_POSITION = "SELECT position FROM ledger_head WHERE id = 1"
_EVENT_HASH = "SELECT chain_hash, recorded_at FROM events WHERE position = %s"


def ensure_checkpoints_topic(
    bootstrap: str, topic: str, replication_factor: int, security: KafkaSecurity | None
) -> None:
    """Creates the checkpoints topic when missing: one partition (one order), retention
    unlimited in time and size, never compacted (every checkpoint is kept).

    Raises:
        KafkaUnavailable: the broker did not answer or refused.
    """
    admin = AdminClient(kafka_client_config(bootstrap, security))
    try:
        if topic in admin.list_topics(timeout=_ADMIN_TIMEOUT_SECONDS).topics:
            return
        futures = admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=replication_factor,
                    config={
                        "retention.ms": "-1",
                        "retention.bytes": "-1",
                        "cleanup.policy": "delete",
                    },
                )
            ],
            operation_timeout=_ADMIN_TIMEOUT_SECONDS,
        )
        futures[topic].result(timeout=15)
        _logger.info("created checkpoints topic %s (retention unlimited)", topic)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise KafkaUnavailable(f"cannot create topic {topic}: {error}") from error


class CheckpointPublisher:
    """Signs and publishes the leader's checkpoints.

    Args:
        policy: When, where and with which key.
        producer: The relay's producer.
        ensure_topic: Creates the checkpoints topic when missing.
        flush_timeout_seconds: How long a checkpoint may wait for its acknowledgement.
        clock: Monotonic seconds (injected for tests).
        wall_clock: Unix seconds (injected for tests).
    """

    def __init__(
        self,
        policy: CheckpointPolicy,
        producer: Producer,
        *,
        ensure_topic: Callable[[], None],
        flush_timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._producer = producer
        self._ensure_topic = ensure_topic
        self._flush_timeout_seconds = flush_timeout_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._key = load_signing_key(policy.signing_key_file)
        self._key_id = key_id(self._key.public_key())
        self._topic_ready = False
        self._last_position = 0
        self._last_monotonic = float("-inf")
        self._last_wall: float | None = None
        self._checked_monotonic = float("-inf")

    def lead(self) -> None:
        """Starts a term of leadership: a checkpoint is due at once."""
        self._last_monotonic = float("-inf")
        self._checked_monotonic = float("-inf")

    def maybe_publish(self, conn: psycopg.Connection[Any]) -> bool:
        """Publishes a checkpoint when one is due; updates the metrics.

        Returns:
            Whether a checkpoint was published (acknowledged by Kafka).

        Raises:
            KafkaUnavailable: Kafka did not acknowledge it (it is due again next time).
            psycopg.OperationalError: the session (and so the leadership) was lost.
        """
        now = self._clock()
        if now - self._checked_monotonic < min(_CHECK_SECONDS_MAX, self._policy.interval_seconds):
            return False
        self._checked_monotonic = now
        position = acknowledged_position(conn)
        self._report(conn)
        behind = position - self._last_position
        due = behind >= self._policy.interval_events or (
            behind > 0 and now - self._last_monotonic >= self._policy.interval_seconds
        )
        if not due or position < 1:
            return False
        if not self._topic_ready:
            self._ensure_topic()
            self._topic_ready = True
        row = conn.execute(_EVENT_HASH, (position,)).fetchone()
        assert row is not None, f"an acknowledged position {position} has its event"
        checkpoint = Checkpoint(
            position=position,
            chain_hash=bytes(row[0]),
            recorded_at=row[1].isoformat(),
            key_id=self._key_id,
        )
        self._publish(checkpoint)
        self._last_position, self._last_monotonic = position, now
        self._last_wall = self._wall_clock()
        _logger.info("signed checkpoint at position %d (%s)", position, row[0].hex())
        self._report(conn)
        return True

    def _publish(self, checkpoint: Checkpoint) -> None:
        failures: list[str] = []
        delivered: list[bool] = []

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            # Runs inside flush(); it must not raise.
            if error is None:
                delivered.append(True)
            else:
                failures.append(str(error))

        try:
            self._producer.produce(
                self._policy.topic,
                key=str(checkpoint.position).encode(),
                value=encode_signed(checkpoint, self._key),
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException) as error:
            raise KafkaUnavailable(f"checkpoint not queued: {error}") from error
        self._producer.flush(self._flush_timeout_seconds)
        if not delivered:
            raise KafkaUnavailable(
                f"checkpoint at position {checkpoint.position} not acknowledged: "
                f"{failures[:1] or 'timed out'}"
            )

    def _report(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(_HEAD_POSITION).fetchone()
        assert row is not None, "ledger_head has its one row"
        CHECKPOINT_LAG.set(int(row[0]) - self._last_position)
        if self._last_wall is not None:
            CHECKPOINT_AGE.set(max(0.0, self._wall_clock() - self._last_wall))


def checkpoint_publisher(config: PollerConfig, producer: Producer) -> CheckpointPublisher | None:
    """The relay's checkpoint publisher; None (and a warning) without a signing key."""
    policy = config.checkpoints
    if policy is None:
        _logger.warning("no checkpoint signing key: the hash chain is not checkpointed")
        return None
    return CheckpointPublisher(
        policy,
        producer,
        ensure_topic=lambda: ensure_checkpoints_topic(
            config.kafka_bootstrap, policy.topic, config.replication_factor, config.kafka_security
        ),
        # Within one Kafka step, so the leader's session never idles out meanwhile.
        flush_timeout_seconds=config.kafka_step_seconds_max,
    )
