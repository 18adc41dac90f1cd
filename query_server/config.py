"""Query server settings, read once from the environment at start.

The declarations below are the reference (docs/configuration.md is generated from them).
"""

from __future__ import annotations

from dataclasses import dataclass

from chronos.config import ES_SECURITY_SETTINGS, ES_URL, REUSE_PORT, SHUTDOWN_GRACE_SECONDS
from chronos.metrics import QUERY_METRICS_PORT as METRICS_PORT
from chronos.read_model.client import ElasticsearchSecurity
from chronos.read_model.config import INDEX_PREFIX
from chronos.read_model.indices import IndexNames
from chronos.rpc import parse_address
from chronos.security.config import SecuritySettings
from chronos.settings import SettingsGroup, integer, number, text

ADDRESS = text(
    "CHRONOS_QUERY_ADDR",
    "127.0.0.1:50052",
    check=parse_address,
    type_name="host:port",
    bounds="host:port",
    doc="Where the gRPC query server listens.",
)
MIN_POSITION_WAIT_SECONDS_MAX = number(
    "CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX",
    5.0,
    minimum=0.0,
    maximum=60.0,
    doc="Longest a call waits for the projection to reach its `min_position` "
    "(the call's deadline may cut it shorter).",
)
WATERMARK_REFRESH_SECONDS = number(
    "CHRONOS_QUERY_WATERMARK_REFRESH_SECONDS",
    0.01,
    minimum=0.001,
    maximum=1.0,
    doc="How stale the cached watermark may be while a call waits for its `min_position`.",
)
WATERMARK_REPORT_MAX_AGE_SECONDS = number(
    "CHRONOS_QUERY_WATERMARK_REPORT_MAX_AGE_SECONDS",
    0.05,
    minimum=0.001,
    maximum=10.0,
    doc="How stale the watermark may be when a call only reports it as `as_of_position` "
    "(an older value is still a lower bound).",
)
ES_TIMEOUT_SECONDS = number(
    "CHRONOS_QUERY_ES_TIMEOUT_SECONDS",
    5.0,
    minimum=0.1,
    maximum=120.0,
    doc="Timeout of one Elasticsearch request.",
)
LINGER_SECONDS = number(
    "CHRONOS_QUERY_LINGER_SECONDS",
    0.005,
    minimum=0.0,
    maximum=0.1,
    doc="While lookups by id overlap, how long a multi-get waits for more of them "
    "(0: never; a lone call never waits).",
)
PROCESSES = integer(
    "CHRONOS_QUERY_PROCESSES",
    1,
    minimum=1,
    maximum=64,
    doc="Server processes sharing the port (a supervisor runs them when above 1).",
)
IN_FLIGHT_MAX = integer(
    "CHRONOS_QUERY_IN_FLIGHT_MAX",
    4096,
    minimum=1,
    maximum=10**6,
    doc="Calls one process holds at once; more are refused with SERVER_BUSY.",
)

SETTINGS = SettingsGroup(
    title="Query server (`python -m query_server`)",
    summary="Answers reads from the Elasticsearch read model.",
    settings=(
        ADDRESS,
        ES_URL,
        *ES_SECURITY_SETTINGS,
        INDEX_PREFIX,
        MIN_POSITION_WAIT_SECONDS_MAX,
        WATERMARK_REFRESH_SECONDS,
        WATERMARK_REPORT_MAX_AGE_SECONDS,
        ES_TIMEOUT_SECONDS,
        LINGER_SECONDS,
        SHUTDOWN_GRACE_SECONDS,
        METRICS_PORT,
        PROCESSES,
        IN_FLIGHT_MAX,
        REUSE_PORT,
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryServerConfig:
    address: str
    es_url: str
    index_prefix: str
    min_position_wait_seconds_max: float
    watermark_refresh_seconds: float
    # How old the watermark reported as as_of_position may be (see WatermarkCache).
    watermark_report_max_age_seconds: float
    es_request_timeout_seconds: float
    read_linger_seconds: float
    shutdown_grace_seconds: float
    metrics_port: int
    processes: int
    in_flight_max: int
    reuse_port: bool
    # TLS, authentication and the rate limit (chronos.security.config).
    security: SecuritySettings
    # None: read from the environment when the client is built (tests build configs).
    es_security: ElasticsearchSecurity | None = None

    @property
    def index_names(self) -> IndexNames:
        return IndexNames(prefix=self.index_prefix)

    @classmethod
    def from_env(cls) -> QueryServerConfig:
        """Reads ``CHRONOS_*`` variables (see ``SETTINGS`` and docs/configuration.md).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        address = ADDRESS.read()
        return cls(
            address=address,
            es_url=ES_URL.read(),
            es_security=ElasticsearchSecurity.from_env(),
            index_prefix=INDEX_PREFIX.read(),
            min_position_wait_seconds_max=MIN_POSITION_WAIT_SECONDS_MAX.read(),
            watermark_refresh_seconds=WATERMARK_REFRESH_SECONDS.read(),
            watermark_report_max_age_seconds=WATERMARK_REPORT_MAX_AGE_SECONDS.read(),
            es_request_timeout_seconds=ES_TIMEOUT_SECONDS.read(),
            read_linger_seconds=LINGER_SECONDS.read(),
            metrics_port=METRICS_PORT.read(),
            processes=PROCESSES.read(),
            in_flight_max=IN_FLIGHT_MAX.read(),
            reuse_port=REUSE_PORT.read(),
            shutdown_grace_seconds=SHUTDOWN_GRACE_SECONDS.read(),
            security=SecuritySettings.from_env(address),
        )
