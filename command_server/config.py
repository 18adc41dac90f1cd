"""Command server settings, read once from the environment at start."""

from __future__ import annotations

from dataclasses import dataclass

from chronos.config import EVENTS_TOPIC, PG_DSN, REUSE_PORT, SHUTDOWN_GRACE_SECONDS, ConfigError
from chronos.domain.limits import BATCH_COMMANDS_MAX
from chronos.event_store.sessions import SessionBounds
from chronos.event_store.settings import WriterSettings
from chronos.metrics import COMMAND_METRICS_PORT as METRICS_PORT
from chronos.rpc import parse_address
from chronos.security.config import SecuritySettings
from chronos.settings import SettingsGroup, integer, number, text

# The writer's limits and session bounds default to WriterSettings' and SessionBounds'
# own, which tests and the tooling use without the environment: one literal each.
_BOUNDS = SessionBounds()
_WRITER = WriterSettings()

ADDRESS = text(
    "CHRONOS_COMMAND_ADDR",
    "127.0.0.1:50051",
    check=parse_address,
    type_name="host:port",
    bounds="host:port",
    doc="Where the gRPC command server listens.",
)
WRITER_LANES = integer(
    "CHRONOS_WRITER_LANES",
    _WRITER.lanes,
    minimum=1,
    maximum=32,
    doc="Group-commit lanes (each with its own connection); the pool holds two more.",
)
WRITER_BATCH_SIZE_MAX = integer(
    "CHRONOS_WRITER_BATCH_SIZE_MAX",
    _WRITER.batch_size_max,
    minimum=1,
    maximum=4096,
    doc="Commands one group commit writes at most.",
)
WRITER_RETRIES_MAX = integer(
    "CHRONOS_WRITER_RETRIES_MAX",
    _WRITER.retries_max,
    minimum=0,
    maximum=50,
    doc="Retries of a batch after a lock timeout or a serialization conflict.",
)
WRITER_LOCK_TIMEOUT_SECONDS = number(
    "CHRONOS_WRITER_LOCK_TIMEOUT_SECONDS",
    _BOUNDS.lock_timeout_seconds,
    minimum=0.1,
    maximum=600,
    doc="Longest wait for an account's lock; longer answers CONCURRENCY_CONFLICT.",
)
WRITER_STATEMENT_TIMEOUT_SECONDS = number(
    "CHRONOS_WRITER_STATEMENT_TIMEOUT_SECONDS",
    _BOUNDS.statement_timeout_seconds,
    minimum=1,
    maximum=3600,
    doc="PostgreSQL statement timeout of the writer; must exceed the lock timeout.",
)
WRITER_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = number(
    "CHRONOS_WRITER_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
    _BOUNDS.idle_in_transaction_timeout_seconds,
    minimum=1,
    maximum=3600,
    doc="PostgreSQL ends a writer transaction idle this long (releasing its locks).",
)
# At least a day: a client retrying within a day must get its first answer back.
IDEMPOTENCY_RETENTION_SECONDS = integer(
    "CHRONOS_IDEMPOTENCY_RETENTION_SECONDS",
    _WRITER.idempotency_retention_seconds,
    minimum=24 * 3600,
    maximum=10**9,
    doc="How long a request id's answer is kept for replays.",
)
IDEMPOTENCY_EXPIRY_INTERVAL_SECONDS = number(
    "CHRONOS_IDEMPOTENCY_EXPIRY_INTERVAL_SECONDS",
    300.0,
    minimum=0.1,
    maximum=86400,
    doc="How often expired idempotency keys are deleted.",
)
HOLD_EXPIRY_INTERVAL_SECONDS = number(
    "CHRONOS_HOLD_EXPIRY_INTERVAL_SECONDS",
    1.0,
    minimum=0.1,
    maximum=3600,
    doc="How often each command server expires the holds whose timeout passed "
    "(a hold expires at most this long after its timeout).",
)
PROCESSES = integer(
    "CHRONOS_COMMAND_PROCESSES",
    1,
    minimum=1,
    maximum=64,
    doc="Server processes sharing the port (a supervisor runs them when above 1).",
)
IN_FLIGHT_MAX = integer(
    "CHRONOS_COMMAND_IN_FLIGHT_MAX",
    10_000,
    minimum=BATCH_COMMANDS_MAX,
    maximum=10**6,
    doc="Commands one process holds at once; more are refused with SERVER_BUSY.",
)

SETTINGS = SettingsGroup(
    title="Command server (`python -m command_server`)",
    summary="Writes commands to the PostgreSQL event store (events, outbox, idempotency).",
    settings=(
        ADDRESS,
        PG_DSN,
        EVENTS_TOPIC,
        WRITER_LANES,
        WRITER_BATCH_SIZE_MAX,
        WRITER_RETRIES_MAX,
        WRITER_LOCK_TIMEOUT_SECONDS,
        WRITER_STATEMENT_TIMEOUT_SECONDS,
        WRITER_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
        IDEMPOTENCY_RETENTION_SECONDS,
        IDEMPOTENCY_EXPIRY_INTERVAL_SECONDS,
        HOLD_EXPIRY_INTERVAL_SECONDS,
        SHUTDOWN_GRACE_SECONDS,
        METRICS_PORT,
        PROCESSES,
        IN_FLIGHT_MAX,
        REUSE_PORT,
    ),
)


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
    hold_expiry_interval_seconds: float
    shutdown_grace_seconds: float
    topic: str
    reuse_port: bool
    metrics_port: int
    processes: int
    # Commands one process holds at once (a batch counts its commands); more are refused
    # with RESOURCE_EXHAUSTED / SERVER_BUSY. A queued command holds about a kilobyte, so
    # the bound keeps a flood of calls from growing a worker without limit.
    in_flight_max: int
    # The waits of every writer session: a transaction that waits longer than the lock
    # timeout for an account's lock answers CONCURRENCY_CONFLICT to the commands on it.
    session_bounds: SessionBounds
    # TLS, authentication and the rate limit (chronos.security.config).
    security: SecuritySettings

    @classmethod
    def from_env(cls) -> CommandServerConfig:
        """Reads ``CHRONOS_*`` variables (see ``SETTINGS`` and docs/configuration.md).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        session_bounds = SessionBounds(
            lock_timeout_seconds=WRITER_LOCK_TIMEOUT_SECONDS.read(),
            statement_timeout_seconds=WRITER_STATEMENT_TIMEOUT_SECONDS.read(),
            idle_in_transaction_timeout_seconds=WRITER_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS.read(),
        )
        # The statement timeout also ends a lock wait: below the lock timeout it would turn
        # every lock conflict into "database unavailable".
        if session_bounds.statement_timeout_seconds <= session_bounds.lock_timeout_seconds:
            raise ConfigError(
                f"{WRITER_STATEMENT_TIMEOUT_SECONDS.name} must be greater than "
                f"{WRITER_LOCK_TIMEOUT_SECONDS.name}"
            )
        lanes = WRITER_LANES.read()
        address = ADDRESS.read()
        return cls(
            address=address,
            pg_dsn=PG_DSN.read(),
            pool_size_max=lanes + 2,
            writer_lanes=lanes,
            batch_size_max=WRITER_BATCH_SIZE_MAX.read(),
            retries_max=WRITER_RETRIES_MAX.read(),
            idempotency_retention_seconds=IDEMPOTENCY_RETENTION_SECONDS.read(),
            idempotency_expiry_interval_seconds=IDEMPOTENCY_EXPIRY_INTERVAL_SECONDS.read(),
            hold_expiry_interval_seconds=HOLD_EXPIRY_INTERVAL_SECONDS.read(),
            shutdown_grace_seconds=SHUTDOWN_GRACE_SECONDS.read(),
            topic=EVENTS_TOPIC.read(),
            reuse_port=REUSE_PORT.read(),
            metrics_port=METRICS_PORT.read(),
            processes=PROCESSES.read(),
            in_flight_max=IN_FLIGHT_MAX.read(),
            session_bounds=session_bounds,
            security=SecuritySettings.from_env(address),
        )
