"""PollerConfig: the session idle timeout must leave room for every wait of the loop."""

from __future__ import annotations

import pytest

from chronos.config import ConfigError
from outbox_poller.config import PollerConfig


def config_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> PollerConfig:
    monkeypatch.setenv("CHRONOS_PG_DSN", "postgresql://localhost/chronos")
    monkeypatch.setenv("CHRONOS_KAFKA_BOOTSTRAP", "localhost:9092")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return PollerConfig.from_env()


def test_the_defaults_keep_every_wait_within_half_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_with(monkeypatch)
    assert config.session_bounds.idle_session_timeout_seconds == 10.0
    assert "-c idle_session_timeout=10000" in config.session_bounds.server_options()


def test_a_wait_longer_than_half_the_idle_timeout_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as refused:
        config_with(
            monkeypatch,
            CHRONOS_POLLER_SESSION_IDLE_TIMEOUT_SECONDS="4",
            CHRONOS_POLLER_STANDBY_CHECK_SECONDS="3",
        )
    message = str(refused.value)
    assert "CHRONOS_POLLER_STANDBY_CHECK_SECONDS (3.0)" in message
    # The default Kafka backoff (5 s) does not fit either; the idle wait (0.25 s) does.
    assert "CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX" in message
    assert "IDLE_WAIT" not in message
