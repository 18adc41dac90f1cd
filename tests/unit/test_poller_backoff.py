"""The poller's two retry loops take their waits from the one policy, capped by
CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX and never shorter than it allows."""

from __future__ import annotations

import pytest

from outbox_poller.config import PollerConfig
from outbox_poller.relay import kafka_backoff, reconnect_backoff
from tests.unit.test_poller_config import config_with as poller_config_with


def config_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> PollerConfig:
    # Room for every cap these tests try.
    return poller_config_with(monkeypatch, CHRONOS_POLLER_SESSION_IDLE_TIMEOUT_SECONDS="60", **env)


def test_reconnects_start_short_and_grow_to_the_kafka_backoff_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = reconnect_backoff(
        config_with(monkeypatch, CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX="2")
    )
    assert [policy.step_seconds(n) for n in (0, 1, 2)] == pytest.approx([0.05, 0.1, 0.2])
    assert policy.step_seconds(10) == 2.0
    assert not policy.gives_up_after(10**6)


def test_kafka_rounds_start_at_the_shortest_idle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = kafka_backoff(
        config_with(
            monkeypatch,
            CHRONOS_POLLER_IDLE_WAIT_SECONDS_MIN="0.01",
            CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX="3",
        )
    )
    assert [policy.step_seconds(n) for n in (0, 1, 2)] == pytest.approx([0.01, 0.02, 0.04])
    assert policy.step_seconds(20) == 3.0
    assert not policy.gives_up_after(10**6)


def test_a_cap_below_the_first_step_bounds_every_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_with(
        monkeypatch,
        CHRONOS_POLLER_IDLE_WAIT_SECONDS_MIN="0.5",
        CHRONOS_POLLER_KAFKA_BACKOFF_SECONDS_MAX="0.02",
    )
    for policy in (reconnect_backoff(config), kafka_backoff(config)):
        assert policy.step_seconds(0) == policy.step_seconds(8) == 0.02
