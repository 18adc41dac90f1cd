"""Outbox poller settings, read once from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass

from chronos.config import (
    ConfigError,
    env_float,
    env_int,
    require_kafka_bootstrap,
    require_pg_dsn,
)
from chronos.event_store.sessions import SessionBounds
from chronos.outbox.contract import DEFAULT_TOPIC


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
    metrics_port: int = 0

    def __post_init__(self) -> None:
        # Between two statements the loop blocks at most once on one of these waits and
        # once on Kafka (a flush slice or a metadata request, each ``kafka_step_seconds_max``),
        # so a healthy poller stays well inside the idle timeout; only a stalled one meets it.
        waits = {
            "CHRONOS_POLLER_IDLE_WAIT_SECONDS_MAX": self.idle_wait_seconds_max,
            "CHRONOS_POLLER_STANDBY_CHECK_SECONDS": self.standby_check_seconds,
            "CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX": self.kafka_backoff_seconds_max,
        }
        too_long = [
            f"{name} ({value})" for name, value in waits.items() if value > self.wait_seconds_max
        ]
        if too_long:
            timeout = self.session_idle_timeout_seconds
            raise ConfigError(
                f"CHRONOS_POLLER_SESSION_IDLE_TIMEOUT_SECONDS ({timeout}) must be at least "
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
        """Reads ``CHRONOS_*`` variables (documented in the README).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        return cls(
            pg_dsn=require_pg_dsn(),
            kafka_bootstrap=require_kafka_bootstrap(),
            topic=os.environ.get("CHRONOS_EVENTS_TOPIC", DEFAULT_TOPIC),
            partitions=env_int("CHRONOS_EVENTS_PARTITIONS", 3, minimum=1, maximum=1024),
            replication_factor=env_int("CHRONOS_EVENTS_REPLICATION", 1, minimum=1, maximum=7),
            batch_size_max=env_int("CHRONOS_POLLER_BATCH_SIZE_MAX", 1000, minimum=1, maximum=50000),
            idle_wait_seconds_min=env_float(
                "CHRONOS_POLLER_IDLE_WAIT_SECONDS_MIN", 0.005, minimum=0.001, maximum=1.0
            ),
            idle_wait_seconds_max=env_float(
                "CHRONOS_POLLER_IDLE_WAIT_SECONDS_MAX", 0.25, minimum=0.001, maximum=10.0
            ),
            kafka_backoff_seconds_max=env_float(
                "CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX", 5.0, minimum=0.01, maximum=60.0
            ),
            flush_timeout_seconds=env_float(
                "CHRONOS_POLLER_FLUSH_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=300.0
            ),
            retention_seconds=env_int(
                "CHRONOS_OUTBOX_RETENTION_SECONDS", 3600, minimum=0, maximum=10**8
            ),
            prune_interval_seconds=env_float(
                "CHRONOS_OUTBOX_PRUNE_INTERVAL_SECONDS", 60.0, minimum=0.1, maximum=86400.0
            ),
            metrics_port=env_int("CHRONOS_POLLER_METRICS_PORT", 9103, minimum=0, maximum=65535),
            standby_check_seconds=env_float(
                "CHRONOS_POLLER_STANDBY_CHECK_SECONDS", 1.0, minimum=0.05, maximum=60.0
            ),
            session_idle_timeout_seconds=env_float(
                "CHRONOS_POLLER_SESSION_IDLE_TIMEOUT_SECONDS", 10.0, minimum=1.0, maximum=3600.0
            ),
            marker_interval_seconds=env_float(
                "CHRONOS_POLLER_MARKER_INTERVAL_SECONDS", 1.0, minimum=0.01, maximum=60.0
            ),
            partition_refresh_seconds=env_float(
                "CHRONOS_POLLER_PARTITION_REFRESH_SECONDS", 30.0, minimum=0.1, maximum=3600.0
            ),
        )
