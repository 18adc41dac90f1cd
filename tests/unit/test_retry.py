"""The one retry policy: capped exponential steps, equal jitter, bounded retries."""

import random

import pytest

from chronos.retry import Backoff


def test_steps_double_from_the_base_up_to_the_cap() -> None:
    policy = Backoff(base_seconds=0.1, cap_seconds=1.0)
    assert [policy.step_seconds(n) for n in range(6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )


def test_a_huge_retry_count_stays_at_the_cap() -> None:
    assert Backoff(cap_seconds=2.0).step_seconds(10_000) == 2.0


def test_every_wait_lies_in_the_upper_half_of_its_step() -> None:
    policy = Backoff(base_seconds=0.05, cap_seconds=5.0)
    rng = random.Random(7)
    for retry in range(12):
        step = policy.step_seconds(retry)
        for _ in range(50):
            assert step / 2 <= policy.delay_seconds(retry, rng) <= step


def test_waits_spread_rather_than_repeat() -> None:
    policy = Backoff(base_seconds=1.0, cap_seconds=1.0)
    rng = random.Random(1)
    assert len({round(policy.delay_seconds(0, rng), 6) for _ in range(20)}) > 10


def test_a_bounded_policy_gives_up_after_its_retries() -> None:
    policy = Backoff(cap_seconds=1.0, retries_max=2)
    assert [policy.gives_up_after(n) for n in range(4)] == [False, False, True, True]
    assert not Backoff(cap_seconds=1.0).gives_up_after(10**6)


def test_a_loop_lengthens_its_waits_and_resets_on_success() -> None:
    waits = Backoff(base_seconds=1.0, cap_seconds=8.0).waits(random.Random(3))
    first = [waits.next_seconds() for _ in range(5)]
    assert [0.5 <= first[0] <= 1, 1 <= first[1] <= 2, 2 <= first[2] <= 4] == [True] * 3
    assert 4 <= first[4] <= 8
    waits.reset()
    assert 0.5 <= waits.next_seconds() <= 1.0


def test_a_base_above_the_cap_is_a_programming_error() -> None:
    with pytest.raises(AssertionError):
        Backoff(base_seconds=2.0, cap_seconds=1.0)
