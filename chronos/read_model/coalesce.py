"""Concurrent reads by id, coalesced into multi-gets: group commit, for the read side.

Under load, most of a ``GetAccount``'s cost was not the lookup but the round trip around
it: one HTTP request through the Elasticsearch client per call, and one request for
Elasticsearch to parse, route and answer, on the same two cores as everything else. Here
the calls that arrive while a multi-get is in flight wait for it to return and then go
together in the next one, so the number of Elasticsearch requests follows the round-trip
time, not the call rate, and a lone call is sent at once.

Freshness: a key is only ever answered by a multi-get *sent after* it was asked for,
never by one already in flight. A caller that read a watermark before asking therefore
gets a document at least as new as that watermark, exactly as with its own GET.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

_Value = TypeVar("_Value")


class CoalescingGetter(Generic[_Value]):
    """Answers ``get(key)`` calls with as few ``fetch(keys)`` calls as possible.

    Args:
        fetch: Looks up many keys at once; returns what it found (absent keys: None).
        keys_per_fetch_max: Most keys in one fetch (a bound on request size).
        fetches_in_flight_max: Most fetches at once; further keys queue behind them.
        linger_seconds: While calls overlap (the last fetch carried more than one key),
            how long a fetch waits for more keys before it is sent. A lone call never
            waits.
    """

    def __init__(
        self,
        fetch: Callable[[list[str]], Awaitable[Mapping[str, _Value]]],
        *,
        keys_per_fetch_max: int,
        fetches_in_flight_max: int,
        linger_seconds: float = 0.0,
    ) -> None:
        assert keys_per_fetch_max >= 1 and fetches_in_flight_max >= 1 and linger_seconds >= 0
        self._fetch = fetch
        self._keys_per_fetch_max = keys_per_fetch_max
        self._fetches_in_flight_max = fetches_in_flight_max
        self._linger_seconds = linger_seconds
        # Keys in the last fetch sent: more than one means calls overlap.
        self._last_fetch_keys = 0
        # Keys asked for and not yet sent, in arrival order, with their waiters.
        self._waiting: dict[str, list[asyncio.Future[_Value | None]]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._launch_scheduled = False

    async def get(self, key: str) -> _Value | None:
        """The value of ``key`` from a fetch sent after this call began; None if absent.

        Raises:
            Whatever ``fetch`` raised for the batch this key went in.
        """
        future: asyncio.Future[_Value | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._launch_scheduled:
            # Launch at the end of this loop iteration, so that calls that arrived in the
            # same iteration share the fetch.
            self._launch_scheduled = True
            asyncio.get_running_loop().call_soon(self._launch)
        return await future

    def _launch(self) -> None:
        self._launch_scheduled = False
        while self._waiting and len(self._in_flight) < self._fetches_in_flight_max:
            batch: dict[str, list[asyncio.Future[_Value | None]]] = {}
            self._take_waiting(batch)
            if not batch:
                continue
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)

    def _take_waiting(self, batch: dict[str, list[asyncio.Future[_Value | None]]]) -> None:
        """Moves waiting keys into ``batch``, up to the size limit, in arrival order (a key
        already in ``batch`` takes its new waiters along)."""
        for key in list(self._waiting):
            if key not in batch and len(batch) == self._keys_per_fetch_max:
                continue
            futures = self._waiting.pop(key)
            # Waiters that gave up (deadline, cancellation) need no lookup.
            if _any_waiting(futures):
                batch.setdefault(key, []).extend(futures)

    async def _run(self, batch: dict[str, list[asyncio.Future[_Value | None]]]) -> None:
        try:
            if self._linger_seconds and self._last_fetch_keys > 1:
                # Under load each request, not each key, is what costs a worker's CPU:
                # gather more keys first.
                await asyncio.sleep(self._linger_seconds)
                self._take_waiting(batch)
            self._last_fetch_keys = len(batch)
            found = await self._fetch(list(batch))
        except asyncio.CancelledError:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as error:
            # Every waiter of the batch sees the failure (translated by fetch).
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
        else:
            for key, futures in batch.items():
                value = found.get(key)
                for future in futures:
                    if not future.done():
                        future.set_result(value)
        finally:
            task = asyncio.current_task()
            assert task is not None
            self._in_flight.discard(task)
            # The keys that queued meanwhile go now, together.
            self._launch()

    async def close(self) -> None:
        """Cancels the fetches in flight (their waiters see CancelledError)."""
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)


def _any_waiting(futures: list[asyncio.Future[_Value | None]]) -> bool:
    return any(not future.done() for future in futures)
