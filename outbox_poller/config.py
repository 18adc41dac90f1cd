"""Outbox poller settings, read once from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass

from chronos.config import env_float, env_int, require_kafka_bootstrap, require_pg_dsn
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
    metrics_port: int = 0

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
        )
