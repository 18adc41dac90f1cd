"""WriterSettings: the writer's waits between attempts come from the one retry policy."""

from __future__ import annotations

import random

from chronos.event_store.writer import WriterSettings


def test_the_backoff_is_capped_by_the_settings_and_gives_up_after_retries_max() -> None:
    settings = WriterSettings(retries_max=3, retry_backoff_seconds_max=0.2)
    backoff = settings.backoff()
    assert backoff.cap_seconds == 0.2
    assert [backoff.gives_up_after(retry) for retry in range(5)] == [False] * 3 + [True] * 2
    rng = random.Random(3)
    waits = [backoff.delay_seconds(retry, rng) for retry in range(10) for _ in range(20)]
    assert max(waits) <= 0.2
    assert min(waits) > 0


def test_a_writer_without_retries_gives_up_after_the_first_attempt() -> None:
    assert WriterSettings(retries_max=0).backoff().gives_up_after(0)
