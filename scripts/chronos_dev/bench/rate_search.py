"""The sustainable rate: a short, bounded search for the highest open-loop rate at which
the read side keeps up.

Pure: the search takes a ``probe(rate) -> ProbeResult`` callable (the bench's probe
runs TransferFunds open loop at that rate; a test passes a fake), so that its logic is
unit-tested without a stack. It assumes that passing is monotone in the rate (a rate
passes when every lower one does), which noise can break: every probe is reported, so a
reader sees it when it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A probe passes when the read side kept up: projection lag p99 at most this...
PROJECTION_LAG_P99_MS_MAX = 1000.0
# ...and the client managed to send (and get answers to) nearly the whole rate, so the
# lag was measured under the load asked for, not under what a saturated client managed.
ACHIEVED_FRACTION_MIN = 0.95
# The low end of the bracket, as a fraction of the high end (the closed-loop
# throughput): far enough below it that it must pass on a machine that is not broken.
LOW_FRACTION_OF_HIGH = 0.1
# Bisection stops when the bracket is narrower than this fraction of the high end:
# finer is below the noise of a probe lasting seconds.
RESOLUTION_FRACTION_OF_HIGH = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """One probe: the rate asked for, what the client achieved, and the read side's lag."""

    rate_per_second: float
    achieved_per_second: float
    # None: nothing observed, or above the histogram's largest bucket.
    projection_lag_p99_ms: float | None
    # Seconds the projection needed after the probe to catch up with its last event.
    drain_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """The read side kept up with (nearly) the whole rate."""
        lag = self.projection_lag_p99_ms
        return (
            lag is not None
            and lag <= PROJECTION_LAG_P99_MS_MAX
            and self.achieved_per_second >= ACHIEVED_FRACTION_MIN * self.rate_per_second
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rate_per_second": round(self.rate_per_second, 1),
            "achieved_per_second": round(self.achieved_per_second, 1),
            "projection_lag_p99_ms": self.projection_lag_p99_ms,
            "drain_seconds": round(self.drain_seconds, 3),
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """The outcome of :func:`find_sustainable_rate`."""

    # The highest rate that passed; None when even the low end failed.
    sustainable_rate_per_second: float | None
    low_per_second: float
    high_per_second: float
    probes: tuple[ProbeResult, ...]

    def to_json(self) -> dict[str, Any]:
        rate = self.sustainable_rate_per_second
        return {
            "sustainable_rate_per_second": None if rate is None else round(rate, 1),
            "low_per_second": round(self.low_per_second, 1),
            "high_per_second": round(self.high_per_second, 1),
            "probes": [probe.to_json() for probe in self.probes],
        }


def bracket(high_per_second: float) -> tuple[float, float]:
    """(low, high) of the search below a closed-loop throughput of ``high_per_second``."""
    assert high_per_second > 0, "the search needs a positive upper end"
    return high_per_second * LOW_FRACTION_OF_HIGH, high_per_second


def find_sustainable_rate(
    probe: Callable[[float], ProbeResult],
    *,
    low_per_second: float,
    high_per_second: float,
    probes_max: int,
) -> SearchResult:
    """Bisects between ``low_per_second`` (probed first: it must pass) and
    ``high_per_second`` (taken as failing without a probe: the closed-loop throughput,
    which an open loop cannot beat), with at most ``probes_max`` probes.

    Stops early when the bracket is narrower than :data:`RESOLUTION_FRACTION_OF_HIGH` of
    the high end. A failing low end ends the search: the result says so (no sustainable
    rate) rather than guessing below it.
    """
    assert probes_max >= 1, "the search needs at least one probe"
    assert 0 < low_per_second <= high_per_second, (low_per_second, high_per_second)
    probes = [probe(low_per_second)]
    if not probes[0].passed:
        return SearchResult(
            sustainable_rate_per_second=None,
            low_per_second=low_per_second,
            high_per_second=high_per_second,
            probes=tuple(probes),
        )
    passing, failing = low_per_second, high_per_second
    resolution = RESOLUTION_FRACTION_OF_HIGH * high_per_second
    while len(probes) < probes_max and failing - passing > resolution:
        rate = (passing + failing) / 2
        result = probe(rate)
        probes.append(result)
        if result.passed:
            passing = rate
        else:
            failing = rate
    return SearchResult(
        sustainable_rate_per_second=passing,
        low_per_second=low_per_second,
        high_per_second=high_per_second,
        probes=tuple(probes),
    )


def half_load_rate(
    *, override: float | None, sustainable: float | None, low: float | None
) -> tuple[float, str]:
    """The rate of stage (e) and where it comes from.

    ``--half-load-rate`` wins; else half of the sustainable rate; else, when the search's
    low end already fell behind, half of that low end (said so); else 0 (no rate known).
    """
    if override is not None:
        return override, "--half-load-rate"
    if sustainable is not None:
        return sustainable / 2, "half of the sustainable rate"
    if low is not None:
        return low / 2, "half of the search's low end, at which the read side fell behind"
    return 0.0, "no sustainable rate (the search did not run)"
