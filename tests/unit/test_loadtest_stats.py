"""The load test's pure parts: latency histogram, open-loop schedule, outcome bookkeeping."""

from __future__ import annotations

import math
import random

import grpc
import pytest

from chronos_dev.loadtest.invariants import check_exactly_once
from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.stats import (
    LatencyHistogram,
    Reservoir,
    bucket_bounds,
    bucket_index,
    log_bins_milliseconds,
    merged,
    scheduled_offset_seconds,
    split_evenly,
    worker_request_count,
    worker_request_index,
)

# --- histogram -----------------------------------------------------------------------


def test_buckets_are_contiguous_and_contain_their_values() -> None:
    previous_high = -1
    for index in range(0, 4000):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1
        assert bucket_index(low) == index
        assert bucket_index(high) == index
        previous_high = high


def test_bucket_width_stays_within_one_percent_of_the_value() -> None:
    for value in [300, 1_000, 12_345, 999_999, 60_000_000]:
        low, high = bucket_bounds(bucket_index(value))
        assert low <= value <= high
        assert (high - low) / low < 0.01


def exact_percentile(values: list[int], percentile: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percentile / 100 * len(ordered))) - 1]


def test_percentiles_match_exact_nearest_rank_within_the_precision() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.record_seconds(value / 1_000_000)
    for percentile in (50.0, 90.0, 99.0, 99.9, 100.0):
        exact = exact_percentile(values, percentile)
        reported = histogram.percentile_microseconds(percentile)
        # Never below the truth, and at most one bucket width above it.
        assert exact <= reported <= exact * (1 + 1 / 128) + 1
    assert histogram.percentile_microseconds(100.0) == max(values)
    assert histogram.min_microseconds == min(values)
    assert histogram.total == len(values)


def test_small_values_are_exact() -> None:
    histogram = LatencyHistogram()
    for microseconds in range(1, 101):
        histogram.record_seconds(microseconds / 1_000_000)
    assert histogram.percentile_microseconds(50.0) == 50
    assert histogram.percentile_microseconds(99.0) == 99
    summary = histogram.summary_milliseconds()
    assert summary["count"] == 100
    assert summary["max_ms"] == pytest.approx(0.1)
    assert summary["mean_ms"] == pytest.approx(0.0505)


def test_empty_histogram_reports_zeros() -> None:
    summary = LatencyHistogram().summary_milliseconds()
    assert summary == {
        "count": 0.0,
        "mean_ms": 0.0,
        "p50_ms": 0.0,
        "p90_ms": 0.0,
        "p99_ms": 0.0,
        "p99.9_ms": 0.0,
        "max_ms": 0.0,
    }


def test_negative_latency_counts_as_zero() -> None:
    histogram = LatencyHistogram()
    histogram.record_seconds(-0.5)
    assert histogram.max_microseconds == 0
    assert histogram.total == 1


def test_merging_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0.0001, 2.0) for _ in range(5000)]
    whole = LatencyHistogram()
    parts = [LatencyHistogram() for _ in range(3)]
    for i, value in enumerate(values):
        whole.record_seconds(value)
        parts[i % 3].record_seconds(value)
    combined = merged(parts)
    assert combined.counts == whole.counts
    assert combined.total == whole.total
    assert combined.min_microseconds == whole.min_microseconds
    assert combined.max_microseconds == whole.max_microseconds
    assert combined.sum_microseconds == whole.sum_microseconds
    # Merging an empty histogram changes nothing, min included.
    combined.merge(LatencyHistogram())
    assert combined.min_microseconds == whole.min_microseconds


def test_log_bins_keep_every_count() -> None:
    histogram = LatencyHistogram()
    for value in [0.0, 0.0005, 0.002, 0.002, 0.05, 1.5]:
        histogram.record_seconds(value)
    bins = log_bins_milliseconds(histogram, bins_per_decade=10)
    assert sum(count for _, _, count in bins) == 6
    assert all(low < high for low, high, _ in bins)
    assert [low for low, _, _ in bins] == sorted(low for low, _, _ in bins)


# --- open-loop schedule --------------------------------------------------------------


def test_requests_are_due_at_fixed_intervals() -> None:
    offsets = [scheduled_offset_seconds(k, 200.0) for k in range(5)]
    assert offsets == pytest.approx([0.0, 0.005, 0.010, 0.015, 0.020])


def test_open_loop_needs_a_rate() -> None:
    with pytest.raises(AssertionError):
        scheduled_offset_seconds(1, 0.0)


def test_workers_interleave_to_cover_every_index_once() -> None:
    workers, count = 3, 10
    seen: list[int] = []
    for worker in range(workers):
        share = worker_request_count(worker, workers, count)
        seen.extend(worker_request_index(worker, workers, j) for j in range(share))
    assert sorted(seen) == list(range(count))


def test_together_workers_follow_the_run_wide_rate() -> None:
    # Worker 1 of 4 at 100/s total sends every fourth request, 40 ms apart, from 10 ms.
    offsets = [scheduled_offset_seconds(worker_request_index(1, 4, j), 100.0) for j in range(3)]
    assert offsets == pytest.approx([0.01, 0.05, 0.09])


@pytest.mark.parametrize(
    ("worker", "workers", "count", "expected"),
    [(0, 1, 5, 5), (0, 2, 5, 3), (1, 2, 5, 2), (3, 4, 3, 0), (0, 4, 0, 0)],
)
def test_worker_request_count(worker: int, workers: int, count: int, expected: int) -> None:
    assert worker_request_count(worker, workers, count) == expected


def test_split_evenly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(2, 2) == [1, 1]
    assert sum(split_evenly(31, 4)) == 31


def test_reservoir_stays_bounded_and_uniform() -> None:
    reservoir = Reservoir(capacity=100, rng=random.Random(1))
    for i in range(10_000):
        reservoir.offer((float(i), "rpc", 1.0))
    assert len(reservoir.items) == 100
    assert reservoir.seen == 10_000
    # A uniform sample of 0..9999 has its mean near 5000 (its standard error is ~290).
    mean = sum(t for t, _, _ in reservoir.items) / 100
    assert 3500 < mean < 6500


# --- outcome bookkeeping -------------------------------------------------------------


def test_replays_with_the_same_answer_are_consistent() -> None:
    outcomes = Outcomes()
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=10, replayed=False)
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=10, replayed=True)
    assert outcomes.replay_mismatch_count == 0
    assert outcomes.replayed_answers == 1
    assert set(outcomes.accepted) == {"r1"}


def test_a_replay_with_another_position_is_a_mismatch() -> None:
    outcomes = Outcomes()
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=10, replayed=False)
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=12, replayed=True)
    assert outcomes.replay_mismatch_count == 1


def test_two_unreplayed_answers_are_a_mismatch() -> None:
    outcomes = Outcomes()
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=10, replayed=False)
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=10, replayed=False)
    assert outcomes.replay_mismatch_count == 1


def test_rejection_then_success_counts_as_accepted() -> None:
    outcomes = Outcomes()
    outcomes.record_failure("r1", grpc.StatusCode.FAILED_PRECONDITION)
    assert outcomes.rejected == {"r1"}
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=5, replayed=False)
    assert outcomes.rejected == set()
    assert set(outcomes.accepted) == {"r1"}


def test_an_open_failure_makes_the_outcome_unknown() -> None:
    outcomes = Outcomes()
    outcomes.record_failure("r1", grpc.StatusCode.FAILED_PRECONDITION)
    outcomes.record_failure("r1", grpc.StatusCode.DEADLINE_EXCEEDED)
    outcomes.record_failure("r1", grpc.StatusCode.FAILED_PRECONDITION)
    assert outcomes.unknown == {"r1"}
    assert outcomes.rejected == set()


def test_rejecting_an_accepted_request_is_a_mismatch_but_a_timeout_is_not() -> None:
    outcomes = Outcomes()
    outcomes.record_ok("r1", "TransferFunds", event_count=2, position=5, replayed=False)
    outcomes.record_failure("r1", grpc.StatusCode.DEADLINE_EXCEEDED)
    assert outcomes.replay_mismatch_count == 0
    outcomes.record_failure("r1", grpc.StatusCode.FAILED_PRECONDITION)
    assert outcomes.replay_mismatch_count == 1


def test_exactly_once_check_passes_on_a_matching_store() -> None:
    outcomes = Outcomes()
    outcomes.record_ok("t1", "TransferFunds", event_count=2, position=7, replayed=False)
    outcomes.record_failure("t2", grpc.StatusCode.FAILED_PRECONDITION)
    outcomes.record_failure("t3", grpc.StatusCode.UNAVAILABLE)
    result = check_exactly_once(outcomes, {"t1": (2, 7), "t3": (2, 9)})
    assert result.passed, result.detail


@pytest.mark.parametrize(
    "stored",
    [
        {},  # the accepted transfer is missing
        {"t1": (4, 9)},  # written twice
        {"t1": (2, 7), "t2": (2, 8)},  # the rejected one was written
        {"t1": (2, 7), "t9": (2, 8)},  # a request_id this run never sent
    ],
)
def test_exactly_once_check_fails_on_a_store_that_disagrees(
    stored: dict[str, tuple[int, int]],
) -> None:
    outcomes = Outcomes()
    outcomes.record_ok("t1", "TransferFunds", event_count=2, position=7, replayed=False)
    outcomes.record_failure("t2", grpc.StatusCode.FAILED_PRECONDITION)
    assert not check_exactly_once(outcomes, stored).passed


def test_exactly_once_check_fails_on_a_transfer_with_three_events() -> None:
    outcomes = Outcomes()
    outcomes.record_ok("t1", "TransferFunds", event_count=3, position=7, replayed=False)
    assert not check_exactly_once(outcomes, {"t1": (3, 7)}).passed
