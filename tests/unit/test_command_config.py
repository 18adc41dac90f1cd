"""CommandServerConfig: the writer's session bounds come from SessionBounds and the env."""

from __future__ import annotations

import pytest

from chronos.config import ConfigError
from chronos.event_store.sessions import SessionBounds
from command_server.config import CommandServerConfig


def config_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> CommandServerConfig:
    monkeypatch.setenv("CHRONOS_PG_DSN", "postgresql://localhost/chronos")
    # These tests are about the writer's settings; security has its own tests.
    monkeypatch.setenv("CHRONOS_INSECURE_NO_TLS", "1")
    monkeypatch.setenv("CHRONOS_INSECURE_NO_AUTH", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CommandServerConfig.from_env()


def test_the_writer_sessions_are_bounded_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds = config_with(monkeypatch).session_bounds
    assert bounds == SessionBounds()
    assert bounds.lock_timeout_seconds > 0 and bounds.statement_timeout_seconds > 0


def test_the_bounds_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds = config_with(
        monkeypatch,
        CHRONOS_WRITER_LOCK_TIMEOUT_SECONDS="0.5",
        CHRONOS_WRITER_STATEMENT_TIMEOUT_SECONDS="20",
        CHRONOS_WRITER_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS="7",
    ).session_bounds
    options = bounds.server_options()
    assert "-c lock_timeout=500" in options
    assert "-c statement_timeout=20000" in options
    assert "-c idle_in_transaction_session_timeout=7000" in options


def test_a_statement_timeout_within_the_lock_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="CHRONOS_WRITER_STATEMENT_TIMEOUT_SECONDS"):
        config_with(
            monkeypatch,
            CHRONOS_WRITER_LOCK_TIMEOUT_SECONDS="5",
            CHRONOS_WRITER_STATEMENT_TIMEOUT_SECONDS="5",
        )
