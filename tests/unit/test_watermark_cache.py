"""WatermarkCache: how old a reported watermark may be, and how often a wait re-reads."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from chronos.read_model.watermark import AsyncWatermarkReader, Watermarks
from query_server.servicer import WatermarkCache


class CountingReader:
    """Answers ``position`` (one partition) and counts the reads."""

    def __init__(self) -> None:
        self.position = 0
        self.reads = 0

    async def read(self) -> Watermarks:
        self.reads += 1
        return Watermarks(partition_count=1, positions={0: self.position})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(reader: CountingReader, clock: FakeClock) -> WatermarkCache:
    return WatermarkCache(
        cast(AsyncWatermarkReader, reader),
        refresh_seconds=0.01,
        report_max_age_seconds=0.05,
        clock=clock,
    )


def test_a_reported_position_is_reread_only_once_older_than_the_report_bound() -> None:
    reader, clock = CountingReader(), FakeClock()
    watermark = cache(reader, clock)

    async def scenario() -> list[Any]:
        reader.position = 7
        first = await watermark.current()
        reader.position = 9
        clock.now += 0.03  # older than the refresh interval, younger than the report bound
        cached = await watermark.current()
        clock.now += 0.03  # now older than the report bound
        reread = await watermark.current()
        return [first, cached, reread]

    assert asyncio.run(scenario()) == [7, 7, 9]
    assert reader.reads == 2


def test_a_wait_rereads_at_the_refresh_interval_not_the_report_bound() -> None:
    reader, clock = CountingReader(), FakeClock()
    watermark = cache(reader, clock)

    async def scenario() -> int | None:
        reader.position = 7
        await watermark.current()
        reader.position = 9
        clock.now += 0.02  # the report bound would still accept 7; a wait must not
        # The fake clock stands still: a wait that kept the cached 7 would sleep forever,
        # so the real-time bound turns that into a failure.
        return await asyncio.wait_for(watermark.wait_for(9, timeout_seconds=1.0), timeout=2.0)

    assert asyncio.run(scenario()) == 9
    assert reader.reads == 2
