"""The background refresher refreshes when woken, survives a failed refresh, and stops;
the projection lag is the newest event's."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from chronos.errors import ChronosError
from projector.lag import observe_projection_lag
from projector.refresher import SearchRefresher

# Long enough that only a wake can explain a call.
INTERVAL_SECONDS = 600.0
WAIT_SECONDS = 10.0


def test_a_wake_refreshes_before_the_interval_and_a_failure_does_not_end_the_thread() -> None:
    calls: list[int] = []
    called = [threading.Event(), threading.Event()]

    def make_searchable() -> None:
        calls.append(1)
        called[len(calls) - 1].set()
        if len(calls) == 1:
            raise ChronosError("Elasticsearch is down")

    refresher = SearchRefresher(make_searchable, interval_seconds=0.01)
    refresher.start()
    try:
        assert called[0].wait(WAIT_SECONDS)
        assert called[1].wait(WAIT_SECONDS), "the thread died with the first failure"
    finally:
        refresher.stop()


def test_nothing_is_refreshed_unless_woken_or_due_and_stop_ends_the_wait() -> None:
    called = threading.Event()
    refresher = SearchRefresher(called.set, interval_seconds=INTERVAL_SECONDS)
    refresher.start()
    try:
        assert not called.wait(0.2)
        refresher.wake()
        assert called.wait(WAIT_SECONDS)
    finally:
        stopping = threading.Thread(target=refresher.stop)
        stopping.start()
        stopping.join(WAIT_SECONDS)
        assert not stopping.is_alive(), "stop() waited for the interval"


def test_the_projection_lag_is_the_newest_events() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    lag = observe_projection_lag(
        [t0, t0 + timedelta(seconds=3), t0 + timedelta(seconds=1)], t0 + timedelta(seconds=5)
    )
    assert lag == 2.0
