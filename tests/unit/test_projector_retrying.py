"""The projector's retries: the one policy's waits, bounded, interruptible by a stop."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from chronos.read_model import ReadModelError, ReadModelUnavailable
from chronos.read_model.history import EventStoreUnavailable
from chronos.retry import Backoff
from projector.config import ProjectorConfig
from projector.errors import ProjectorStopped
from projector.retrying import Retrying, backoff


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded."""

    def __init__(self, stop_at_wait: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._stop_at_wait = stop_at_wait

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return len(self.waits) == self._stop_at_wait


def failing(times: int, error: Exception) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return calls, action


def test_transient_failures_are_retried_after_the_policys_waits() -> None:
    policy = Backoff(base_seconds=0.1, cap_seconds=0.4, retries_max=5)
    stop = RecordingStop()
    calls, action = failing(4, ReadModelUnavailable("down"))
    assert Retrying(policy, stop, random.Random(2))("writing", action) == "done"
    assert len(calls) == 5
    assert len(stop.waits) == 4
    for retry, wait in enumerate(stop.waits):
        step = policy.step_seconds(retry)
        assert step / 2 <= wait <= step


def test_the_last_failure_is_raised_after_the_retries() -> None:
    stop = RecordingStop()
    calls, action = failing(10, EventStoreUnavailable("down"))
    retrying = Retrying(Backoff(cap_seconds=1.0, retries_max=2), stop)
    with pytest.raises(EventStoreUnavailable):
        retrying("reading", action)
    assert len(calls) == 3
    assert len(stop.waits) == 2


def test_a_permanent_error_is_not_retried() -> None:
    stop = RecordingStop()
    calls, action = failing(1, ReadModelError("mapping conflict"))
    with pytest.raises(ReadModelError):
        Retrying(Backoff(cap_seconds=1.0, retries_max=3), stop)("writing", action)
    assert len(calls) == 1
    assert stop.waits == []


def test_a_stop_interrupts_the_wait() -> None:
    stop = RecordingStop(stop_at_wait=2)
    calls, action = failing(10, ReadModelUnavailable("down"))
    with pytest.raises(ProjectorStopped):
        Retrying(Backoff(cap_seconds=1.0, retries_max=9), stop)("writing", action)
    assert len(calls) == 2


def test_the_policy_comes_from_the_settings_and_a_short_cap_bounds_the_first_step() -> None:
    config = ProjectorConfig(
        kafka_bootstrap="k", es_url="e", retries_max=7, retry_backoff_seconds_max=2.0
    )
    policy = backoff(config)
    assert (policy.base_seconds, policy.cap_seconds, policy.retries_max) == (0.05, 2.0, 7)
    short = backoff(
        ProjectorConfig(kafka_bootstrap="k", es_url="e", retry_backoff_seconds_max=0.01)
    )
    assert short.step_seconds(0) == short.step_seconds(5) == 0.01
