"""Latency statistics and the open-loop schedule: pure code, no I/O.

Latencies go into a :class:`LatencyHistogram`, a log-linear histogram in the spirit of
HdrHistogram: exact below 256 microseconds, and above that every power of two is split
into 128 buckets, so any reported percentile is within 1/128 (under 0.8 %) of the true
value while memory stays bounded (a few thousand buckets at most) however many requests
a run makes. Histograms of several client processes merge by adding counts.

The schedule functions place request ``k`` of a run at ``k / rate`` seconds after the
start, whichever process sends it (see :func:`scheduled_offset_seconds`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

# Significant bits kept per value: 2**(bits-1) buckets per power of two above 2**bits.
_SIGNIFICANT_BITS = 8
_HALF = 1 << (_SIGNIFICANT_BITS - 1)
# Latencies above this are clamped (a bound on the bucket count); RPC deadlines are far
# shorter, so only a broken clock could get there.
LATENCY_MICROSECONDS_MAX = 3600 * 1_000_000

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_index(value: int) -> int:
    """The bucket of a non-negative integer ``value`` (microseconds)."""
    assert value >= 0, f"negative value {value}"
    shift = max(0, value.bit_length() - _SIGNIFICANT_BITS)
    if shift == 0:
        return value
    return shift * _HALF + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value that fall into bucket ``index``."""
    assert index >= 0
    if index < 2 * _HALF:
        return index, index
    shift = index // _HALF - 1
    mantissa = index - shift * _HALF
    low = mantissa << shift
    return low, low + (1 << shift) - 1


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of latencies in microseconds; see the module docstring for the precision."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    sum_microseconds: int = 0
    min_microseconds: int = 0
    max_microseconds: int = 0

    def record_seconds(self, latency_seconds: float) -> None:
        """Adds one latency. Negative values (clock jitter) count as zero."""
        value = min(LATENCY_MICROSECONDS_MAX, max(0, round(latency_seconds * 1_000_000)))
        index = bucket_index(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.total == 0 or value < self.min_microseconds:
            self.min_microseconds = value
        self.max_microseconds = max(self.max_microseconds, value)
        self.total += 1
        self.sum_microseconds += value

    def merge(self, other: LatencyHistogram) -> None:
        """Adds every count of ``other`` to this histogram."""
        if other.total == 0:
            return
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        if self.total == 0 or other.min_microseconds < self.min_microseconds:
            self.min_microseconds = other.min_microseconds
        self.max_microseconds = max(self.max_microseconds, other.max_microseconds)
        self.total += other.total
        self.sum_microseconds += other.sum_microseconds

    def percentile_microseconds(self, percentile: float) -> int:
        """The nearest-rank percentile (0 < percentile <= 100); 0 when empty.

        Reports the upper bound of the bucket holding that rank, capped at the largest
        value recorded, so the figure never understates a latency.
        """
        assert 0.0 < percentile <= 100.0, f"percentile {percentile} out of (0, 100]"
        if self.total == 0:
            return 0
        rank = max(1, math.ceil(percentile / 100.0 * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_bounds(index)[1], self.max_microseconds)
        raise AssertionError("rank beyond the total count")

    def summary_milliseconds(self) -> dict[str, float]:
        """count, mean, p50, p90, p99, p99.9 and max, in milliseconds (count is a count)."""
        result: dict[str, float] = {"count": float(self.total)}
        result["mean_ms"] = self.sum_microseconds / self.total / 1000 if self.total else 0.0
        for percentile in PERCENTILES:
            result[f"p{percentile:g}_ms"] = self.percentile_microseconds(percentile) / 1000
        result["max_ms"] = self.max_microseconds / 1000
        return result


def log_bins_milliseconds(
    histogram: LatencyHistogram, bins_per_decade: int = 20
) -> list[tuple[float, float, int]]:
    """The histogram regrouped into equal-width bins on a log scale, for plotting.

    Returns (low, high, count) in milliseconds per non-empty bin, by value; each bucket
    goes to the bin of its midpoint, and zero-latency buckets to the first bin above 1 µs.
    """
    assert bins_per_decade > 0
    counts: dict[int, int] = {}
    for index, count in histogram.counts.items():
        low, high = bucket_bounds(index)
        middle_milliseconds = max(0.001, (low + high) / 2 / 1000)
        slot = math.floor(math.log10(middle_milliseconds) * bins_per_decade)
        counts[slot] = counts.get(slot, 0) + count
    return [
        (10 ** (slot / bins_per_decade), 10 ** ((slot + 1) / bins_per_decade), counts[slot])
        for slot in sorted(counts)
    ]


def merged(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """A new histogram holding the counts of all ``histograms``."""
    result = LatencyHistogram()
    for histogram in histograms:
        result.merge(histogram)
    return result


# --- the open-loop schedule ----------------------------------------------------------


def scheduled_offset_seconds(index: int, rate_per_second: float) -> float:
    """When request ``index`` (0-based, counted over the whole run) is due.

    Open loop: request ``k`` is due at ``k / rate`` seconds after the start whether or
    not earlier requests have answered, and its latency is measured from that time. A
    slow server therefore shows up as latency (time spent waiting for a free client
    slot included) instead of silently lowering the offered load, which is the
    coordinated-omission error of closed-loop benchmarks.
    """
    assert rate_per_second > 0, "open loop needs a positive rate"
    assert index >= 0
    return index / rate_per_second


def worker_request_index(worker_index: int, worker_count: int, local_index: int) -> int:
    """The run-wide index of a worker's ``local_index``-th request.

    Workers interleave (worker ``w`` of ``n`` sends requests ``w, w + n, w + 2n, ...``),
    so together they follow the run-wide schedule at the full rate.
    """
    assert 0 <= worker_index < worker_count
    assert local_index >= 0
    return worker_index + local_index * worker_count


def worker_request_count(worker_index: int, worker_count: int, count_total: int) -> int:
    """How many of the run's first ``count_total`` requests worker ``worker_index`` sends."""
    assert 0 <= worker_index < worker_count
    assert count_total >= 0
    if count_total <= worker_index:
        return 0
    return (count_total - worker_index + worker_count - 1) // worker_count


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers that differ by at most one."""
    assert parts > 0 and total >= 0
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --- samples for the plot ------------------------------------------------------------


@dataclass(slots=True)
class Reservoir:
    """A uniform random sample of at most ``capacity`` items (Vitter's algorithm R).

    Keeps the plot's memory bounded however long the run: every item seen has the same
    chance to be in the sample.
    """

    capacity: int
    rng: random.Random
    items: list[tuple[float, str, float]] = field(default_factory=list)
    seen: int = 0

    def offer(self, item: tuple[float, str, float]) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.capacity:
            self.items[slot] = item
