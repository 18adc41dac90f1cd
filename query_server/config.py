"""Query server settings, read once from the environment at start.

* ``CHRONOS_QUERY_ADDR``: ``host:port`` to listen on (default ``127.0.0.1:50052``).
* ``CHRONOS_ES_URL``: Elasticsearch (required).
* ``CHRONOS_INDEX_PREFIX``: prefix of the read-side indices (default ``chronos``).
* ``CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX``: longest a call waits for the
  projection to reach its ``min_position`` (default 5; the call's deadline may cut it
  shorter).
* ``CHRONOS_QUERY_WATERMARK_REFRESH_SECONDS``: how stale the cached watermark may be
  while a call waits for its ``min_position``, i.e. how often it is re-read then
  (default 0.01).
* ``CHRONOS_QUERY_WATERMARK_REPORT_MAX_AGE_SECONDS``: how stale it may be when a call
  only reports it as ``as_of_position`` (default 0.05; any older value is still a lower
  bound of what the answer reflects).
* ``CHRONOS_QUERY_ES_TIMEOUT_SECONDS``: timeout of one Elasticsearch request (default 5).
* ``CHRONOS_QUERY_LINGER_SECONDS``: while lookups by id overlap, how long a multi-get
  waits for more of them before it is sent (default 0.005; 0 never waits; a lone call
  never waits).
* ``CHRONOS_QUERY_METRICS_PORT``: port of ``/metrics`` (default 9102; 0 disables).
* ``CHRONOS_QUERY_PROCESSES``: server processes sharing the port (default 1).
* ``CHRONOS_QUERY_IN_FLIGHT_MAX``: calls one process holds at once; more are refused
  with RESOURCE_EXHAUSTED / SERVER_BUSY (default 4096).
* ``CHRONOS_SHUTDOWN_GRACE_SECONDS``: how long in-flight calls may finish on SIGTERM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from chronos.config import ConfigError, env_float, env_int, require_es_url
from chronos.read_model.indices import DEFAULT_PREFIX, IndexNames
from chronos.rpc import parse_address


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryServerConfig:
    address: str
    es_url: str
    index_prefix: str = DEFAULT_PREFIX
    min_position_wait_seconds_max: float = 5.0
    watermark_refresh_seconds: float = 0.01
    # How old the watermark reported as as_of_position may be (see WatermarkCache).
    watermark_report_max_age_seconds: float = 0.05
    es_request_timeout_seconds: float = 5.0
    read_linger_seconds: float = 0.0
    shutdown_grace_seconds: float = 10.0
    metrics_port: int = 0
    processes: int = 1
    in_flight_max: int = 4096
    reuse_port: bool = False

    @property
    def index_names(self) -> IndexNames:
        return IndexNames(prefix=self.index_prefix)

    @classmethod
    def from_env(cls) -> QueryServerConfig:
        """Reads ``CHRONOS_*`` variables (see the module docstring).

        Raises:
            ConfigError: a value is missing or malformed.
        """
        address = os.environ.get("CHRONOS_QUERY_ADDR", "127.0.0.1:50052")
        try:
            parse_address(address)
        except ValueError as error:
            raise ConfigError(f"CHRONOS_QUERY_ADDR: {error}") from error
        prefix = os.environ.get("CHRONOS_INDEX_PREFIX", DEFAULT_PREFIX)
        try:
            IndexNames(prefix=prefix)
        except ValueError as error:
            raise ConfigError(f"CHRONOS_INDEX_PREFIX: {error}") from error
        return cls(
            address=address,
            es_url=require_es_url(),
            index_prefix=prefix,
            min_position_wait_seconds_max=env_float(
                "CHRONOS_QUERY_MIN_POSITION_WAIT_SECONDS_MAX", 5.0, minimum=0.0, maximum=60.0
            ),
            watermark_refresh_seconds=env_float(
                "CHRONOS_QUERY_WATERMARK_REFRESH_SECONDS", 0.01, minimum=0.001, maximum=1.0
            ),
            watermark_report_max_age_seconds=env_float(
                "CHRONOS_QUERY_WATERMARK_REPORT_MAX_AGE_SECONDS", 0.05, minimum=0.001, maximum=10.0
            ),
            es_request_timeout_seconds=env_float(
                "CHRONOS_QUERY_ES_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=120.0
            ),
            read_linger_seconds=env_float(
                "CHRONOS_QUERY_LINGER_SECONDS", 0.005, minimum=0.0, maximum=0.1
            ),
            metrics_port=env_int("CHRONOS_QUERY_METRICS_PORT", 9102, minimum=0, maximum=65535),
            processes=env_int("CHRONOS_QUERY_PROCESSES", 1, minimum=1, maximum=64),
            in_flight_max=env_int("CHRONOS_QUERY_IN_FLIGHT_MAX", 4096, minimum=1, maximum=10**6),
            reuse_port=os.environ.get("CHRONOS_REUSE_PORT", "0") == "1",
            shutdown_grace_seconds=env_float(
                "CHRONOS_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0, maximum=300
            ),
        )
