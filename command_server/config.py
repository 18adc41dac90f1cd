"""Command server settings, read once from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass

from chronos.config import ConfigError, env_float, env_int, require_pg_dsn
from chronos.domain.limits import BATCH_COMMANDS_MAX
from chronos.event_store.sessions import SessionBounds
from chronos.rpc import parse_address


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandServerConfig:
    address: str
    pg_dsn: str
    pool_size_max: int
    writer_lanes: int
    batch_size_max: int
    retries_max: int
    idempotency_retention_seconds: int
    idempotency_expiry_interval_seconds: float
    shutdown_grace_seconds: float
    topic: str
    reuse_port: bool
    metrics_port: int
    processes: int
    # Commands one process holds at once (a batch counts its commands); more are refused
    # with RESOURCE_EXHAUSTED / SERVER_BUSY. ~1.3 kB each while queued (measured: 300,000
    # took 384 MB), so the default bounds them near 13 MB.
    in_flight_max: int
    # The waits of every writer session: a transaction that waits longer than the lock
    # timeout for an account's lock answers CONCURRENCY_CONFLICT to the commands on it.
    session_bounds: SessionBounds

    @classmethod
    def from_env(cls) -> CommandServerConfig:
        """Reads ``CHRONOS_*`` variables (documented in the README).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        address = os.environ.get("CHRONOS_COMMAND_ADDR", "127.0.0.1:50051")
        try:
            parse_address(address)
        except ValueError as error:
            raise ConfigError(f"CHRONOS_COMMAND_ADDR: {error}") from error
        lanes = env_int("CHRONOS_WRITER_LANES", 1, minimum=1, maximum=32)
        defaults = SessionBounds()
        session_bounds = SessionBounds(
            lock_timeout_seconds=env_float(
                "CHRONOS_WRITER_LOCK_TIMEOUT_SECONDS",
                defaults.lock_timeout_seconds,
                minimum=0.1,
                maximum=600,
            ),
            statement_timeout_seconds=env_float(
                "CHRONOS_WRITER_STATEMENT_TIMEOUT_SECONDS",
                defaults.statement_timeout_seconds,
                minimum=1,
                maximum=3600,
            ),
            idle_in_transaction_timeout_seconds=env_float(
                "CHRONOS_WRITER_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
                defaults.idle_in_transaction_timeout_seconds,
                minimum=1,
                maximum=3600,
            ),
        )
        # The statement timeout also ends a lock wait: below the lock timeout it would turn
        # every lock conflict into "database unavailable".
        if session_bounds.statement_timeout_seconds <= session_bounds.lock_timeout_seconds:
            raise ConfigError(
                "CHRONOS_WRITER_STATEMENT_TIMEOUT_SECONDS must be greater than "
                "CHRONOS_WRITER_LOCK_TIMEOUT_SECONDS"
            )
        retention = env_int(
            "CHRONOS_IDEMPOTENCY_RETENTION_SECONDS", 24 * 3600, minimum=24 * 3600, maximum=10**9
        )
        return cls(
            address=address,
            pg_dsn=require_pg_dsn(),
            pool_size_max=lanes + 2,
            writer_lanes=lanes,
            batch_size_max=env_int("CHRONOS_WRITER_BATCH_SIZE_MAX", 256, minimum=1, maximum=4096),
            retries_max=env_int("CHRONOS_WRITER_RETRIES_MAX", 5, minimum=0, maximum=50),
            idempotency_retention_seconds=retention,
            idempotency_expiry_interval_seconds=env_float(
                "CHRONOS_IDEMPOTENCY_EXPIRY_INTERVAL_SECONDS", 300.0, minimum=0.1, maximum=86400
            ),
            shutdown_grace_seconds=env_float(
                "CHRONOS_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0, maximum=300
            ),
            topic=os.environ.get("CHRONOS_EVENTS_TOPIC", "chronos.ledger.events"),
            reuse_port=os.environ.get("CHRONOS_REUSE_PORT", "0") == "1",
            metrics_port=env_int("CHRONOS_COMMAND_METRICS_PORT", 9101, minimum=0, maximum=65535),
            processes=env_int("CHRONOS_COMMAND_PROCESSES", 1, minimum=1, maximum=64),
            in_flight_max=env_int(
                "CHRONOS_COMMAND_IN_FLIGHT_MAX", 10_000, minimum=BATCH_COMMANDS_MAX, maximum=10**6
            ),
            session_bounds=session_bounds,
        )
