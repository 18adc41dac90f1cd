"""chronos.telemetry.Throttle: one log line per interval, counting the rest."""

from __future__ import annotations

from chronos.telemetry import Throttle


def test_lets_one_through_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = Throttle(5.0, clock=lambda: now[0])
    assert throttle.admit() == 0
    assert [throttle.admit() for _ in range(3)] == [None, None, None]
    now[0] = 104.9
    assert throttle.admit() is None
    now[0] = 105.0
    assert throttle.admit() == 4
    now[0] = 200.0
    assert throttle.admit() == 0
