"""Helpers for reading settings from the environment, with clear messages.

Each process has its own frozen config dataclass (e.g. ``command_server/config.py``)
built once at start from these helpers. There are no secret defaults.
"""

from __future__ import annotations

import os

from chronos.errors import ChronosError


class ConfigError(ChronosError):
    """A setting is missing or malformed."""


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from error
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from error
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def require_pg_dsn() -> str:
    dsn = os.environ.get("CHRONOS_PG_DSN", "")
    if not dsn:
        raise ConfigError(
            "CHRONOS_PG_DSN is not set: start the local stack and load its settings with "
            '`eval "$(chronos-dev infra env)"`, or point it at your PostgreSQL'
        )
    return dsn


def require_kafka_bootstrap() -> str:
    bootstrap = os.environ.get("CHRONOS_KAFKA_BOOTSTRAP", "")
    if not bootstrap:
        raise ConfigError(
            "CHRONOS_KAFKA_BOOTSTRAP is not set: start the local stack and load its settings "
            'with `eval "$(chronos-dev infra env)"`, or point it at your Kafka'
        )
    return bootstrap


def require_es_url() -> str:
    url = os.environ.get("CHRONOS_ES_URL", "")
    if not url:
        raise ConfigError(
            "CHRONOS_ES_URL is not set: start the local stack and load its settings with "
            '`eval "$(chronos-dev infra env)"`, or point it at your Elasticsearch'
        )
    return url
