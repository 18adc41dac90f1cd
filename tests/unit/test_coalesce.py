"""CoalescingGetter: concurrent reads by id share multi-gets, never a stale one."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any

import pytest

from chronos.read_model.coalesce import CoalescingGetter


class RecordingStore:
    """A key-value fetch that records each call and can be held open or made to fail."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.error: Exception | None = None

    async def fetch(self, keys: list[str]) -> Mapping[str, int]:
        self.calls.append(list(keys))
        # Read the values when the fetch is sent, as Elasticsearch would.
        snapshot = {key: self.values[key] for key in keys if key in self.values}
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return snapshot


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, timeout=10))


async def settle() -> None:
    """Lets every ready callback and task run (a call takes three loop iterations)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_calls_in_one_loop_iteration_share_one_fetch() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1, "b": 2, "c": 3})
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        results = await asyncio.gather(*(getter.get(key) for key in ["a", "b", "a", "x", "c"]))
        assert results == [1, 2, 1, None, 3]
        # One fetch, each key once (the second "a" rides on the first).
        assert store.calls == [["a", "b", "x", "c"]]

    run(scenario())


def test_calls_arriving_during_a_fetch_go_together_in_the_next_one() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1, "b": 2, "c": 3})
        store.release.clear()
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        first = asyncio.create_task(getter.get("a"))
        await settle()
        assert store.calls == [["a"]]
        later = [asyncio.create_task(getter.get(key)) for key in ["b", "c", "a"]]
        await settle()
        # Queued behind the fetch in flight, not sent yet.
        assert store.calls == [["a"]]
        store.release.set()
        assert await first == 1
        assert [await task for task in later] == [2, 3, 1]
        assert store.calls == [["a"], ["b", "c", "a"]]

    run(scenario())


def test_a_key_is_never_answered_by_a_fetch_sent_before_it_was_asked() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1})
        store.release.clear()
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        stale = asyncio.create_task(getter.get("a"))
        await settle()
        # The value changes after the first fetch read it; a new call must see the change.
        store.values["a"] = 2
        fresh = asyncio.create_task(getter.get("a"))
        await settle()
        store.release.set()
        assert await stale == 1
        assert await fresh == 2
        assert len(store.calls) == 2

    run(scenario())


def test_batches_respect_the_size_and_in_flight_limits() -> None:
    async def scenario() -> None:
        keys = [f"k{i}" for i in range(25)]
        store = RecordingStore({key: i for i, key in enumerate(keys)})
        store.release.clear()
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=2)
        tasks = [asyncio.create_task(getter.get(key)) for key in keys]
        await settle()
        # Two fetches of ten in flight; the last five wait for one of them.
        assert [len(call) for call in store.calls] == [10, 10]
        store.release.set()
        assert [await task for task in tasks] == list(range(25))
        assert [len(call) for call in store.calls] == [10, 10, 5]
        assert sorted(key for call in store.calls for key in call) == sorted(keys)

    run(scenario())


def test_a_failed_fetch_fails_its_callers_only() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1, "b": 2})
        store.error = RuntimeError("unreachable")
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        outcomes = await asyncio.gather(getter.get("a"), getter.get("b"), return_exceptions=True)
        assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
        store.error = None
        assert await getter.get("b") == 2

    run(scenario())


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1, "b": 2})
        store.release.clear()
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        first = asyncio.create_task(getter.get("a"))
        await settle()
        gone = asyncio.create_task(getter.get("a"))
        kept = asyncio.create_task(getter.get("b"))
        await settle()
        gone.cancel()
        store.release.set()
        assert await first == 1
        assert await kept == 2
        with pytest.raises(asyncio.CancelledError):
            await gone

    run(scenario())


def test_close_cancels_the_fetches_in_flight() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1})
        store.release.clear()
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        waiting = asyncio.create_task(getter.get("a"))
        await settle()
        await getter.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run(scenario())


def test_while_calls_overlap_a_fetch_lingers_to_gather_more_keys() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1, "b": 2, "c": 3, "d": 4})
        getter = CoalescingGetter(
            store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1, linger_seconds=0.05
        )
        # A lone call is sent at once, without lingering.
        assert await asyncio.wait_for(getter.get("a"), timeout=0.04) == 1
        # Two calls together: one fetch; from now on calls overlap.
        assert await asyncio.gather(getter.get("a"), getter.get("b")) == [1, 2]
        assert store.calls == [["a"], ["a", "b"]]
        first = asyncio.create_task(getter.get("c"))
        await settle()
        # The fetch lingers: a key asked meanwhile, and the same key asked again, join it.
        later = [asyncio.create_task(getter.get(key)) for key in ("d", "c")]
        assert await first == 3
        assert [await task for task in later] == [4, 3]
        assert store.calls[2:] == [["c", "d"]]
        # That fetch had two keys, so the next lingers too, and then carries one key only:
        # after it, a lone call is sent at once again.
        assert await getter.get("a") == 1
        assert await asyncio.wait_for(getter.get("b"), timeout=0.04) == 2

    run(scenario())


def test_a_fetch_that_failed_after_its_only_caller_gave_up_is_not_served_to_the_next() -> None:
    async def scenario() -> None:
        store = RecordingStore({"a": 1})
        store.release.clear()
        store.error = RuntimeError("unreachable")
        getter = CoalescingGetter(store.fetch, keys_per_fetch_max=10, fetches_in_flight_max=1)
        gone = asyncio.create_task(getter.get("a"))
        await settle()
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        # The fetch fails with nobody waiting for it; a later call asks again.
        store.release.set()
        await settle()
        store.error = None
        assert await getter.get("a") == 1
        assert store.calls == [["a"], ["a"]]

    run(scenario())
