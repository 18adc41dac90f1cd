"""The read model's visible position, cached and shared by concurrent queries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from chronos.read_model.watermark import AsyncWatermarkReader


class WatermarkCache:
    """The visible position, re-read at most every ``refresh_seconds``.

    Many concurrent calls share one in-flight read, so waiting calls cost Elasticsearch
    one realtime mget per refresh interval, however many there are.

    A call that only reports the position (``as_of_position``, no ``min_position`` to
    wait for) accepts a value up to ``report_max_age_seconds`` old: any earlier value is
    still a true lower bound of what the answer reflects. Under load the multi-gets that
    piggyback the watermarks keep it that fresh, and the value arrives one multi-get's
    latency after its read started; with the report bound at the refresh interval, a
    busy query worker sent nearly one watermark mget of its own per piggybacked one, and
    spent a large share of its time in those reads.
    """

    def __init__(
        self,
        reader: AsyncWatermarkReader,
        *,
        refresh_seconds: float,
        report_max_age_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._refresh_seconds = refresh_seconds
        self._report_max_age_seconds = (
            refresh_seconds if report_max_age_seconds is None else report_max_age_seconds
        )
        self._clock = clock
        self._value = 0
        self._read_at = float("-inf")
        self._inflight: asyncio.Task[int] | None = None

    async def current(self) -> int:
        """The visible position to report, at most ``report_max_age_seconds`` old."""
        return await self._fresh(self._report_max_age_seconds)

    async def _fresh(self, max_age_seconds: float) -> int:
        if self._clock() - self._read_at >= max_age_seconds:
            await self._refresh()
        return self._value

    async def _refresh(self) -> None:
        task = self._inflight
        if task is None or task.done():
            # Only a read still in flight is shared. One that ended (with every caller
            # gone, cancelled by their deadlines) began before this caller asked: its
            # value may be stale, and its failure is not this caller's to answer.
            task = self._inflight = asyncio.create_task(self._read())
            task.add_done_callback(_retrieve)
        # Shielded: one caller's cancellation must not cancel the shared read.
        await asyncio.shield(task)

    async def _read(self) -> int:
        started = self._clock()
        self._observe((await self._reader.read()).visible_position, started)
        return self._value

    def _observe(self, visible: int, read_started: float) -> None:
        # Watermarks only move forward; never report an older read over a newer one.
        self._value = max(self._value, visible)
        self._read_at = max(self._read_at, read_started)

    def piggyback(self) -> tuple[list[dict[str, str]], Callable[[list[Any]], None]]:
        """Lets another multi-get read the watermarks too, saving a request of their own.

        Returns:
            The ``mget`` items to add, and the function to call with what they read.
        """
        started = self._clock()
        if started - self._read_at < self._refresh_seconds / 2:
            # Fresh enough: every watermark read is a shard-level get for Elasticsearch,
            # so under load they ride along about once per refresh interval, early
            # enough that current() never finds the value stale.
            return [], _ignore

        def accept(docs: list[Any]) -> None:
            watermarks = self._reader.accept(docs)
            if watermarks is not None:
                self._observe(watermarks.visible_position, started)

        return self._reader.docs(), accept

    async def wait_for(self, position: int, timeout_seconds: float) -> int | None:
        """Waits until the visible position is >= ``position``; None on timeout."""
        deadline = self._clock() + max(0.0, timeout_seconds)
        while True:
            visible = await self._fresh(self._refresh_seconds)
            if visible >= position:
                return visible
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self._refresh_seconds, remaining))


def _ignore(_docs: list[Any]) -> None:
    pass


def _retrieve(task: asyncio.Task[int]) -> None:
    # A read whose callers all gave up has nobody to raise its failure to; the next
    # caller reads again and sees its own outcome.
    if not task.cancelled():
        task.exception()
