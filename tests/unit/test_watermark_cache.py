"""WatermarkCache: how old a reported watermark may be, and how often a wait re-reads."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from chronos.read_model import ReadModelError
from chronos.read_model.watermark import AsyncWatermarkReader, Watermarks
from chronos.read_model.watermark_cache import WatermarkCache


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


class HeldReader:
    """Answers ``position`` once released, or fails with ``error``; counts the reads."""

    def __init__(self) -> None:
        self.position = 0
        self.reads = 0
        self.error: Exception | None = None
        self.release = asyncio.Event()

    async def read(self) -> Watermarks:
        self.reads += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return Watermarks(partition_count=1, positions={0: self.position})


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def abandon_a_read(watermark: WatermarkCache, reader: HeldReader) -> None:
    """A caller starts the shared read and is cancelled (its deadline) while it is in
    flight; the read then ends with nobody waiting for it."""
    reader.release.clear()
    gone = asyncio.create_task(watermark.current())
    await settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    reader.release.set()
    await settle()


def held_cache(reader: HeldReader, clock: FakeClock) -> WatermarkCache:
    return cache(cast(CountingReader, reader), clock)


def test_a_read_that_failed_after_its_caller_gave_up_is_not_served_to_the_next() -> None:
    reader, clock = HeldReader(), FakeClock()
    watermark = held_cache(reader, clock)

    async def scenario() -> int:
        reader.error = ReadModelError("Elasticsearch unreachable")
        await abandon_a_read(watermark, reader)
        reader.error, reader.position = None, 9
        return await watermark.current()

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) == 9
    assert reader.reads == 2


def test_a_read_that_ended_after_its_caller_gave_up_is_not_served_once_stale() -> None:
    reader, clock = HeldReader(), FakeClock()
    watermark = held_cache(reader, clock)

    async def scenario() -> int:
        reader.position = 7
        await abandon_a_read(watermark, reader)
        clock.now += 1.0  # the abandoned read's 7 is now older than the report bound
        reader.position = 9
        return await watermark.current()

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) == 9
    assert reader.reads == 2


def test_a_caller_cancelled_during_a_shared_read_leaves_it_to_the_others() -> None:
    reader, clock = HeldReader(), FakeClock()
    watermark = held_cache(reader, clock)

    async def scenario() -> int:
        reader.release.clear()
        reader.position = 7
        gone = asyncio.create_task(watermark.current())
        await settle()
        kept = asyncio.create_task(watermark.current())
        await settle()
        gone.cancel()
        reader.release.set()
        return await kept

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) == 7
    assert reader.reads == 1
