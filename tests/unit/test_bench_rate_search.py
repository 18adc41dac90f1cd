"""The sustainable rate's search, with fake probes: no stack, no timings."""

from __future__ import annotations

import pytest

from chronos_dev.bench.rate_search import (
    ACHIEVED_FRACTION_MIN,
    PROJECTION_LAG_P99_MS_MAX,
    RESOLUTION_FRACTION_OF_HIGH,
    ProbeResult,
    bracket,
    find_sustainable_rate,
    half_load_rate,
)


class FakeProbe:
    """Passes every rate up to ``limit`` (monotone), records what it was asked."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.rates: list[float] = []

    def __call__(self, rate: float) -> ProbeResult:
        self.rates.append(rate)
        keeps_up = rate <= self.limit
        return ProbeResult(
            rate_per_second=rate,
            achieved_per_second=rate,
            projection_lag_p99_ms=50.0 if keeps_up else 2500.0,
        )


def test_a_probe_passes_only_with_low_lag_and_the_rate_achieved() -> None:
    def probe(achieved: float, lag: float | None) -> ProbeResult:
        return ProbeResult(
            rate_per_second=100.0, achieved_per_second=achieved, projection_lag_p99_ms=lag
        )

    assert probe(100.0, PROJECTION_LAG_P99_MS_MAX).passed
    assert probe(100.0 * ACHIEVED_FRACTION_MIN, 10.0).passed
    assert not probe(100.0, PROJECTION_LAG_P99_MS_MAX + 1).passed
    assert not probe(100.0 * ACHIEVED_FRACTION_MIN - 1, 10.0).passed
    # Nothing observed, or above the largest bucket: the read side did not show it kept up.
    assert not probe(100.0, None).passed


@pytest.mark.parametrize("limit", [150.0, 333.0, 512.0, 790.0, 999.0])
@pytest.mark.parametrize("probes_max", [2, 3, 5, 8])
def test_the_search_brackets_the_limit_within_its_probe_budget(
    limit: float, probes_max: int
) -> None:
    probe = FakeProbe(limit)
    low, high = 100.0, 1000.0

    found = find_sustainable_rate(
        probe, low_per_second=low, high_per_second=high, probes_max=probes_max
    )

    assert 1 <= len(probe.rates) <= probes_max
    assert probe.rates[0] == low
    assert [p.rate_per_second for p in found.probes] == probe.rates
    rate = found.sustainable_rate_per_second
    assert rate is not None and low <= rate <= limit
    # The answer is the highest rate that passed.
    assert rate == max(p.rate_per_second for p in found.probes if p.passed)
    # Each probe after the first halves the bracket, down to the resolution.
    bisections = len(probe.rates) - 1
    width = (high - low) / 2**bisections
    assert limit - rate <= max(width, RESOLUTION_FRACTION_OF_HIGH * high)


def test_more_probes_come_closer_but_stop_at_the_resolution() -> None:
    probe = FakeProbe(limit=600.0)

    found = find_sustainable_rate(
        probe, low_per_second=100.0, high_per_second=1000.0, probes_max=20
    )

    assert len(probe.rates) < 20
    rate = found.sustainable_rate_per_second
    assert rate is not None and 600.0 - RESOLUTION_FRACTION_OF_HIGH * 1000.0 <= rate <= 600.0


def test_a_failing_low_end_is_reported_without_a_rate() -> None:
    probe = FakeProbe(limit=10.0)

    found = find_sustainable_rate(probe, low_per_second=100.0, high_per_second=1000.0, probes_max=5)

    assert found.sustainable_rate_per_second is None
    assert probe.rates == [100.0]
    assert [p.passed for p in found.probes] == [False]
    assert found.to_json()["sustainable_rate_per_second"] is None
    assert found.to_json()["probes"][0]["passed"] is False


def test_one_probe_checks_the_low_end_only() -> None:
    probe = FakeProbe(limit=1000.0)

    found = find_sustainable_rate(probe, low_per_second=100.0, high_per_second=1000.0, probes_max=1)

    assert probe.rates == [100.0]
    assert found.sustainable_rate_per_second == 100.0


def test_the_high_end_is_never_probed() -> None:
    probe = FakeProbe(limit=5000.0)

    found = find_sustainable_rate(probe, low_per_second=100.0, high_per_second=1000.0, probes_max=5)

    assert 1000.0 not in probe.rates
    assert all(p.passed for p in found.probes)
    rate = found.sustainable_rate_per_second
    assert rate is not None and 900.0 <= rate < 1000.0


def test_the_bracket_starts_well_below_the_closed_loop_throughput() -> None:
    low, high = bracket(800.0)

    assert high == 800.0
    assert 0 < low < high / 2


def test_the_half_load_rate_prefers_the_override_then_the_sustainable_rate() -> None:
    assert half_load_rate(override=123.0, sustainable=400.0, low=80.0) == (
        123.0,
        "--half-load-rate",
    )
    rate, source = half_load_rate(override=None, sustainable=400.0, low=80.0)
    assert rate == 200.0 and "sustainable" in source
    rate, source = half_load_rate(override=None, sustainable=None, low=80.0)
    assert rate == 40.0 and "fell behind" in source
    rate, _ = half_load_rate(override=None, sustainable=None, low=None)
    assert rate == 0.0
