"""The bench's hold stages without servers: the countdown that makes holds fall due
together, the expiry job's figures from the holds' timestamps, the options, and the
report's rows."""

from __future__ import annotations

import random

import pytest

from chronos_dev.bench.hold_client import create_request
from chronos_dev.bench.hold_stages import ExpiryTimes, expiry_figures, timeout_until
from chronos_dev.bench.options import (
    EXPIRY_HOLDS_DEFAULT,
    QUICK_EXPIRY_HOLDS,
    parse_options,
)
from chronos_dev.bench.report import format_table

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


@pytest.mark.parametrize(
    ("due_at", "now", "timeout_seconds"),
    [
        (100.0, 90.0, 10),
        (100.0, 90.4, 10),  # due at 100.4: at most a second late
        (100.0, 99.9, 1),
        (100.0, 100.0, 1),  # the shortest timeout a hold takes
        (100.0, 130.0, 1),  # placed after the moment: due as soon as it can be
    ],
)
def test_the_timeout_counts_down_to_the_due_moment(
    due_at: float, now: float, timeout_seconds: int
) -> None:
    assert timeout_until(due_at, now) == timeout_seconds
    if now <= due_at - 1:
        assert due_at <= now + timeout_seconds < due_at + 1


def test_the_expiry_rate_counts_from_the_first_due_to_the_last_expired() -> None:
    times = ExpiryTimes(
        holds=1_000, first_due=10.0, last_due=10.9, first_expired=10.5, last_expired=12.5
    )
    figures = expiry_figures(times)
    assert figures == {
        "holds_expired": 1_000,
        "expired_per_second": 400.0,
        "expired_per_second_while_expiring": 500.0,
        "due_spread_seconds": 0.9,
        "first_due_to_first_expired_seconds": 0.5,
        "first_due_to_last_expired_seconds": 2.5,
    }


def test_holds_expired_in_one_transaction_have_no_rate_while_expiring() -> None:
    times = ExpiryTimes(
        holds=10, first_due=10.0, last_due=10.0, first_expired=10.2, last_expired=10.2
    )
    figures = expiry_figures(times)
    assert figures["expired_per_second"] == 50.0
    assert figures["expired_per_second_while_expiring"] is None


def test_a_hold_request_moves_between_two_distinct_accounts() -> None:
    rng = random.Random(1)
    request = create_request([A, B], "EUR", 50, rng, "r-1", timeout_seconds=7)
    assert {request.from_account_id, request.to_account_id} == {A, B}
    assert 1 <= request.amount.minor_units <= 50 and request.amount.currency == "EUR"
    assert request.timeout_seconds == 7 and request.request_id == "r-1"


def test_the_expiry_holds_option_has_a_quick_default_and_a_bound() -> None:
    assert parse_options([]).expiry_holds == EXPIRY_HOLDS_DEFAULT
    assert parse_options(["--quick"]).expiry_holds == QUICK_EXPIRY_HOLDS
    assert parse_options(["--quick", "--expiry-holds", "7"]).expiry_holds == 7
    with pytest.raises(SystemExit):
        parse_options(["--expiry-holds", "0"])


def test_the_table_has_a_row_for_each_hold_figure() -> None:
    results = {
        "hold_pairs": {
            "throughput_per_second": 321.5,
            "latency_ms": {"p50_ms": 20.0, "p99_ms": 80.0},
        },
        "hold_pair_batches": {
            "throughput_per_second": 1_234.5,
            "batch_size": 200,
            "latency_ms": {"p50_ms": 150.0, "p99_ms": 400.0},
        },
        "hold_expiry": {
            "expired_per_second": 2_345.6,
            "holds_expired": 10_000,
            "first_due_to_last_expired_seconds": 4.26,
        },
    }
    rows = {line.split("  ")[0]: line for line in format_table(results).splitlines()}
    pairs = rows["(h) hold pairs: CreatePendingTransfer + PostPendingTransfer"]
    assert "321.5 pairs/s, pair p50 20.00 / p99 80.00 ms" in pairs
    batches = rows["(h') hold pairs in ExecuteBatch (200 creates, then their posts)"]
    assert "1,234.5 pairs/s, both calls p50 150.00 / p99 400.00 ms" in batches
    expiry = rows["(x) hold expiry job, first due -> last expired"]
    assert "2,345.6 holds/s (10,000 holds, 4.26 s)" in expiry


def test_missing_hold_figures_read_as_dashes() -> None:
    rows = {line.split("  ")[0]: line.split() for line in format_table({}).splitlines()}
    assert rows["(h) hold pairs: CreatePendingTransfer + PostPendingTransfer"][6:8] == [
        "-",
        "pairs/s,",
    ]
    assert rows["(x) hold expiry job, first due -> last expired"][9:11] == ["-", "holds/s"]
