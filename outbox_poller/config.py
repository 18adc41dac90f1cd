"""Outbox poller settings, read once from the environment at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chronos.audit.settings import (
    CHECKPOINT_INTERVAL_EVENTS,
    CHECKPOINT_INTERVAL_SECONDS,
    CHECKPOINT_SIGNING_KEY_FILE,
    CHECKPOINTS_TOPIC,
    checkpoints_topic,
)
from chronos.config import (
    EVENTS_TOPIC,
    KAFKA_BOOTSTRAP,
    KAFKA_SECURITY_SETTINGS,
    PG_DSN,
    ConfigError,
)
from chronos.event_store.sessions import SessionBounds
from chronos.kafka_client import KafkaSecurity
from chronos.metrics import POLLER_METRICS_PORT as METRICS_PORT
from chronos.settings import SettingsGroup, integer, number

PARTITIONS = integer(
    "CHRONOS_EVENTS_PARTITIONS",
    3,
    minimum=1,
    maximum=1024,
    doc="Partitions of the events topic when the poller creates it.",
)
REPLICATION = integer(
    "CHRONOS_EVENTS_REPLICATION",
    1,
    minimum=1,
    maximum=7,
    doc="Replication factor of the events topic when the poller creates it.",
)
BATCH_SIZE_MAX = integer(
    "CHRONOS_POLLER_BATCH_SIZE_MAX",
    1000,
    minimum=1,
    maximum=50000,
    doc="Outbox rows relayed per batch at most.",
)
IDLE_WAIT_SECONDS_MIN = number(
    "CHRONOS_POLLER_IDLE_WAIT_SECONDS_MIN",
    0.005,
    minimum=0.001,
    maximum=1.0,
    doc="First wait after an empty poll of the outbox (it doubles while idle).",
)
IDLE_WAIT_SECONDS_MAX = number(
    "CHRONOS_POLLER_IDLE_WAIT_SECONDS_MAX",
    0.25,
    minimum=0.001,
    maximum=10.0,
    doc="Longest wait between two polls of an idle outbox.",
)
KAFKA_BACKOFF_SECONDS_MAX = number(
    "CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX",
    5.0,
    minimum=0.01,
    maximum=60.0,
    doc="Cap of the backoff while Kafka refuses or is unreachable.",
)
FLUSH_TIMEOUT_SECONDS = number(
    "CHRONOS_POLLER_FLUSH_TIMEOUT_SECONDS",
    30.0,
    minimum=0.1,
    maximum=300.0,
    doc="How long a batch may wait for Kafka's acknowledgements.",
)
RETENTION_SECONDS = integer(
    "CHRONOS_OUTBOX_RETENTION_SECONDS",
    3600,
    minimum=0,
    maximum=10**8,
    doc="How long published outbox rows are kept before they are pruned.",
)
PRUNE_INTERVAL_SECONDS = number(
    "CHRONOS_OUTBOX_PRUNE_INTERVAL_SECONDS",
    60.0,
    minimum=0.1,
    maximum=86400.0,
    doc="How often published outbox rows past the retention are deleted.",
)
STANDBY_CHECK_SECONDS = number(
    "CHRONOS_POLLER_STANDBY_CHECK_SECONDS",
    1.0,
    minimum=0.05,
    maximum=60.0,
    doc="How often a standby poller tries to take the leadership.",
)
SESSION_IDLE_TIMEOUT_SECONDS = number(
    "CHRONOS_POLLER_SESSION_IDLE_TIMEOUT_SECONDS",
    10.0,
    minimum=1.0,
    maximum=3600.0,
    doc="PostgreSQL ends the poller's session after this long without a statement "
    "(freeing a stalled leader's lock); at least twice every other wait.",
)
MARKER_INTERVAL_SECONDS = number(
    "CHRONOS_POLLER_MARKER_INTERVAL_SECONDS",
    1.0,
    minimum=0.01,
    maximum=60.0,
    doc="While idle, how often the leader sends the watermark markers again.",
)
PARTITION_REFRESH_SECONDS = number(
    "CHRONOS_POLLER_PARTITION_REFRESH_SECONDS",
    30.0,
    minimum=0.1,
    maximum=3600.0,
    doc="How often the leader re-reads the topic's partition count.",
)

SETTINGS = SettingsGroup(
    title="Outbox poller (`python -m outbox_poller`)",
    summary="Relays the outbox to Kafka; one leader at a time, the others stand by.",
    settings=(
        PG_DSN,
        KAFKA_BOOTSTRAP,
        *KAFKA_SECURITY_SETTINGS,
        EVENTS_TOPIC,
        PARTITIONS,
        REPLICATION,
        BATCH_SIZE_MAX,
        IDLE_WAIT_SECONDS_MIN,
        IDLE_WAIT_SECONDS_MAX,
        KAFKA_BACKOFF_SECONDS_MAX,
        FLUSH_TIMEOUT_SECONDS,
        RETENTION_SECONDS,
        PRUNE_INTERVAL_SECONDS,
        STANDBY_CHECK_SECONDS,
        SESSION_IDLE_TIMEOUT_SECONDS,
        MARKER_INTERVAL_SECONDS,
        PARTITION_REFRESH_SECONDS,
        METRICS_PORT,
        CHECKPOINTS_TOPIC,
        CHECKPOINT_INTERVAL_EVENTS,
        CHECKPOINT_INTERVAL_SECONDS,
        CHECKPOINT_SIGNING_KEY_FILE,
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointPolicy:
    """When and with what key the leader signs checkpoints of the hash chain
    (``outbox_poller.checkpoints``, docs/audit.md)."""

    topic: str
    interval_events: int
    interval_seconds: float
    signing_key_file: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class PollerConfig:
    pg_dsn: str
    kafka_bootstrap: str
    topic: str
    partitions: int
    replication_factor: int
    batch_size_max: int
    idle_wait_seconds_min: float
    idle_wait_seconds_max: float
    kafka_backoff_seconds_max: float
    flush_timeout_seconds: float
    retention_seconds: int
    prune_interval_seconds: float
    standby_check_seconds: float
    # The server ends the poller's session after this long without a statement, which
    # releases the leadership lock of a leader that stalled (SIGSTOP, a frozen VM).
    session_idle_timeout_seconds: float
    # While idle the leader sends watermark markers again this often: markers lost after
    # the last batch must not leave readers behind for good.
    marker_interval_seconds: float
    # How often the leader re-reads the topic's partition count (and at once after a
    # failure), so that partitions added later receive markers too.
    partition_refresh_seconds: float
    metrics_port: int = METRICS_PORT.default
    # None: read from the environment when a client is built (tests build configs).
    kafka_security: KafkaSecurity | None = None
    # None: no signed checkpoints (no signing key configured).
    checkpoints: CheckpointPolicy | None = None

    def __post_init__(self) -> None:
        # Between two statements the loop blocks at most once on one of these waits and
        # once on Kafka (a flush slice or a metadata request, each ``kafka_step_seconds_max``),
        # so a healthy poller stays well inside the idle timeout; only a stalled one meets it.
        waits = {
            IDLE_WAIT_SECONDS_MAX.name: self.idle_wait_seconds_max,
            STANDBY_CHECK_SECONDS.name: self.standby_check_seconds,
            KAFKA_BACKOFF_SECONDS_MAX.name: self.kafka_backoff_seconds_max,
        }
        too_long = [
            f"{name} ({value})" for name, value in waits.items() if value > self.wait_seconds_max
        ]
        if too_long:
            timeout = self.session_idle_timeout_seconds
            raise ConfigError(
                f"{SESSION_IDLE_TIMEOUT_SECONDS.name} ({timeout}) must be at least "
                f"twice {', '.join(too_long)}"
            )

    @property
    def wait_seconds_max(self) -> float:
        """The longest wait between two statements on the poller's session."""
        return self.session_idle_timeout_seconds / 2

    @property
    def kafka_step_seconds_max(self) -> float:
        """The longest the loop blocks on Kafka at once without a statement in between."""
        return self.session_idle_timeout_seconds / 4

    @property
    def session_bounds(self) -> SessionBounds:
        """The limits of the poller's PostgreSQL session."""
        return SessionBounds(idle_session_timeout_seconds=self.session_idle_timeout_seconds)

    @classmethod
    def from_env(cls) -> PollerConfig:
        """Reads ``CHRONOS_*`` variables (see ``SETTINGS`` and docs/configuration.md).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        return cls(
            pg_dsn=PG_DSN.read(),
            kafka_bootstrap=KAFKA_BOOTSTRAP.read(),
            kafka_security=KafkaSecurity.from_env(),
            topic=EVENTS_TOPIC.read(),
            partitions=PARTITIONS.read(),
            replication_factor=REPLICATION.read(),
            batch_size_max=BATCH_SIZE_MAX.read(),
            idle_wait_seconds_min=IDLE_WAIT_SECONDS_MIN.read(),
            idle_wait_seconds_max=IDLE_WAIT_SECONDS_MAX.read(),
            kafka_backoff_seconds_max=KAFKA_BACKOFF_SECONDS_MAX.read(),
            flush_timeout_seconds=FLUSH_TIMEOUT_SECONDS.read(),
            retention_seconds=RETENTION_SECONDS.read(),
            prune_interval_seconds=PRUNE_INTERVAL_SECONDS.read(),
            metrics_port=METRICS_PORT.read(),
            standby_check_seconds=STANDBY_CHECK_SECONDS.read(),
            session_idle_timeout_seconds=SESSION_IDLE_TIMEOUT_SECONDS.read(),
            marker_interval_seconds=MARKER_INTERVAL_SECONDS.read(),
            partition_refresh_seconds=PARTITION_REFRESH_SECONDS.read(),
            checkpoints=_checkpoint_policy(),
        )


def _checkpoint_policy() -> CheckpointPolicy | None:
    key_file = CHECKPOINT_SIGNING_KEY_FILE.read()
    if not key_file:
        return None
    return CheckpointPolicy(
        topic=checkpoints_topic(EVENTS_TOPIC.read(), CHECKPOINTS_TOPIC.read()),
        interval_events=CHECKPOINT_INTERVAL_EVENTS.read(),
        interval_seconds=CHECKPOINT_INTERVAL_SECONDS.read(),
        signing_key_file=Path(key_file),
    )
