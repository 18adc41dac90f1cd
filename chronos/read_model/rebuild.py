"""``chronos projection rebuild``: replay the event store into new index versions, then
swap the aliases (blue/green) while the live projection keeps serving.

1. Create ``v<N+1>`` of the data indices (the event log's included), with refresh off
   and asynchronous translog (a bulk load needs neither), and no alias.
2. Replay the event store up to its head H in position order, through the same
   ``documents`` functions as the projector, keeping every account's document in
   memory (no read-back), bulk-writing statement lines as it goes and account documents
   at the end of each pass.
3. Catch up: replay (H, H'] for the events committed meanwhile, a few bounded rounds.
4. Restore the refresh interval and fence the watermarks (block writes to the
   watermark index): from here on the live projector keeps applying events, but no
   watermark moves, so none can claim an event that is only in the old version.
5. Catch up to the head read after the fence, refresh, and swap both aliases to
   ``v<N+1>`` in one atomic ``_aliases`` call (each alias's write index is the new
   version). Every event a watermark claims was applied before the fence, so it is at
   or below that head: the new version holds it before any reader is sent there.
6. Catch up once more, up to the head read *after* the swap: the live projector wrote
   events it consumed before the swap into the old version only; every one of them is
   in the event store at or below that head, so this pass puts them into the new
   version. The projector, which writes through the aliases, is in the new version from
   the swap on; writes from both are versioned and idempotent, so overlapping is
   harmless. Then lift the fence (also when anything failed): the projector writes the
   watermarks it held back.
7. Delete the old versions unless ``keep_old``.

A rebuild killed while fenced leaves the watermarks fenced (reads answer
PROJECTION_BEHIND); running the rebuild again lifts it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from elasticsearch import ApiError, Elasticsearch, TransportError

from chronos.event_store.reader import head_position, iter_events
from chronos.read_model.documents import (
    AccountDocument,
    EventRecord,
    fold_batch,
    record_from_stored,
)
from chronos.read_model.es_writer import EsWriter, WriteResult, fence_watermarks
from chronos.read_model.event_documents import source_from_stored
from chronos.read_model.indices import (
    REFRESH_INTERVAL,
    IndexNames,
    create_data_indices,
    ensure_indices,
    swap_aliases,
    translate,
)

BATCH_SIZE_DEFAULT = 5000
BATCH_SIZE_MAX = 50_000
CATCH_UP_ROUNDS_MAX = 10
BULK_REQUESTS_IN_FLIGHT_MAX = 2
# Stop catching up before the swap once fewer events than this are left.
CATCH_UP_SMALL_ENOUGH = 1000
# Net allocations between two young-generation collections during a rebuild (Python's
# default is 700); see _rare_collections.
REBUILD_GC_ALLOCATIONS = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far the rebuild is, for the progress line."""

    phase: str
    events: int
    events_total: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.events_per_second
        if rate <= 0:
            return None
        return max(0.0, (self.events_total - self.events) / rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class RebuildReport:
    old_indices: tuple[str, ...]
    new_version: int
    head_position: int
    final_position: int
    events: int
    accounts: int
    replayed_events: int
    replay_seconds: float
    total_seconds: float
    deleted: tuple[str, ...]

    @property
    def events_per_second(self) -> float:
        """Replay throughput up to the first head (the bulk of the work)."""
        return self.replayed_events / self.replay_seconds if self.replay_seconds > 0 else 0.0


class _Replayer:
    """Folds events into in-memory documents and writes them to concrete indices."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        writer: EsWriter,
        names: IndexNames,
        version: int,
        batch_size: int,
    ) -> None:
        self._conn = conn
        self._writer = writer
        self._accounts_index = names.accounts_version(version)
        self._transactions_index = names.transactions_version(version)
        self._holds_index = names.pending_version(version)
        self._events_index = names.events_version(version)
        self._batch_size = batch_size
        self.documents: dict[str, AccountDocument | None] = {}
        self.position = 0
        self.events = 0
        self.result = WriteResult()

    def replay(
        self,
        up_to_position: int,
        *,
        on_batch: Callable[[], None] = lambda: None,
        version_type: str = "external",
        refresh: str | bool = False,
    ) -> None:
        """Replays ``(self.position, up_to_position]`` and writes its documents."""
        dirty: set[str] = set()
        # Bulk requests run on worker threads while the next batch is decoded and
        # folded, so Python's work and Elasticsearch's indexing overlap; two requests in
        # flight keep both of the shard's indexing threads busy.
        with ThreadPoolExecutor(
            max_workers=BULK_REQUESTS_IN_FLIGHT_MAX, thread_name_prefix="rebuild-bulk"
        ) as pool:
            pending: deque[Future[WriteResult]] = deque()
            for records, events in self._batches(up_to_position):
                documents = fold_batch(
                    {record.stream_id: self.documents.get(record.stream_id) for record in records},
                    records,
                )
                for document in documents.accounts:
                    self.documents[document.account_id] = document
                    dirty.add(document.account_id)
                if len(pending) >= BULK_REQUESTS_IN_FLIGHT_MAX:
                    self.result += pending.popleft().result()
                pending.append(
                    pool.submit(
                        self._writer.write_documents,
                        (),
                        documents.transactions,
                        refresh=False,
                        transactions_index=self._transactions_index,
                        holds=documents.holds,
                        holds_index=self._holds_index,
                        events=events,
                        events_index=self._events_index,
                    )
                )
                self.position = records[-1].position
                self.events += len(records)
                on_batch()
            while pending:
                self.result += pending.popleft().result()
        accounts = [self.documents[account_id] for account_id in sorted(dirty)]
        chunk = self._batch_size
        for start in range(0, len(accounts), chunk):
            part = [document for document in accounts[start : start + chunk] if document]
            self.result += self._writer.write_documents(
                part,
                (),
                refresh=refresh if start + chunk >= len(accounts) else False,
                accounts_index=self._accounts_index,
                version_type=version_type,
            )

    def _batches(
        self, up_to_position: int
    ) -> Iterator[tuple[list[EventRecord], list[tuple[int, dict[str, Any]]]]]:
        """Batches of decoded events, each with its events' event-log documents."""
        batch: list[EventRecord] = []
        events: list[tuple[int, dict[str, Any]]] = []
        for stored in iter_events(
            self._conn,
            after_position=self.position,
            up_to_position=up_to_position,
            batch_size=self._batch_size,
        ):
            batch.append(record_from_stored(stored))
            events.append(
                (stored.position, source_from_stored(stored, chain_hash=stored.chain_hash.hex()))
            )
            if len(batch) >= self._batch_size:
                yield batch, events
                batch, events = [], []
        if batch:
            yield batch, events


def _set_bulk_load(es: Elasticsearch, indices: list[str], *, on: bool) -> None:
    settings: dict[str, Any] = (
        {"refresh_interval": "-1", "translog": {"durability": "async"}}
        if on
        else {"refresh_interval": REFRESH_INTERVAL, "translog": {"durability": "request"}}
    )
    try:
        es.indices.put_settings(index=",".join(indices), settings={"index": settings})
        if not on:
            es.indices.refresh(index=",".join(indices))
    except (ApiError, TransportError) as error:
        raise translate(error, "changing index settings") from error


def _refresh(es: Elasticsearch, indices: list[str]) -> None:
    try:
        es.indices.refresh(index=",".join(indices))
    except (ApiError, TransportError) as error:
        raise translate(error, "refreshing the new version") from error


def _next_version(es: Elasticsearch, names: IndexNames) -> int:
    try:
        response = es.indices.get(
            index=",".join(f"{alias}-v*" for alias in names.data_aliases),
            expand_wildcards="all",
        )
    except (ApiError, TransportError) as error:
        raise translate(error, "listing index versions") from error
    versions = [v for v in (names.version_of(index) for index in response.body) if v is not None]
    return max(versions, default=0) + 1


# Makes the progress callback of one phase: (phase, events in total) -> callback.
_Report = Callable[[str, int], Callable[[], None]]


def rebuild(
    conn: psycopg.Connection[Any],
    es: Elasticsearch,
    names: IndexNames,
    *,
    batch_size: int = BATCH_SIZE_DEFAULT,
    keep_old: bool = False,
    progress: Callable[[Progress], None] = lambda progress: None,
) -> RebuildReport:
    """Rebuilds the read model from the event store and swaps the aliases to it.

    Args:
        conn: Autocommit connection to the event store.
        es: Synchronous Elasticsearch client.
        names: Index names (prefix).
        batch_size: Events per read and per bulk request.
        keep_old: Keep the previous index versions instead of deleting them.
        progress: Called after every batch.

    Raises:
        ReadModelError, ReadModelUnavailable: Elasticsearch failed; the aliases still
            point to the old version (the new one is left for inspection).
    """
    assert 1 <= batch_size <= BATCH_SIZE_MAX
    with _rare_collections():
        return _rebuild(
            conn, es, names, batch_size=batch_size, keep_old=keep_old, progress=progress
        )


@contextlib.contextmanager
def _rare_collections() -> Iterator[None]:
    """Runs the cyclic garbage collector less often while the rebuild runs: a replay
    allocates millions of short-lived dicts and lists in no cycle, which reference
    counting frees, and at the default pace the collector spent much CPU walking them."""
    previous = gc.get_threshold()
    gc.set_threshold(REBUILD_GC_ALLOCATIONS, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _rebuild(
    conn: psycopg.Connection[Any],
    es: Elasticsearch,
    names: IndexNames,
    *,
    batch_size: int,
    keep_old: bool,
    progress: Callable[[Progress], None],
) -> RebuildReport:
    started = time.monotonic()
    ensure_indices(es, names)
    # A rebuild killed while fenced left the watermarks fenced.
    fence_watermarks(es, names, on=False)
    version = _next_version(es, names)
    data_indices = [index for _, index, _ in names.data_versions(version)]
    create_data_indices(es, names, version, refresh_interval="-1")
    _set_bulk_load(es, data_indices, on=True)
    replayer = _Replayer(conn, EsWriter(es, names), names, version, batch_size)

    def report(phase: str, total: int) -> Callable[[], None]:
        return lambda: progress(
            Progress(
                phase=phase,
                events=replayer.events,
                events_total=total,
                seconds=time.monotonic() - started,
            )
        )

    head = head_position(conn)
    replayer.replay(head, on_batch=report("replay", head))
    replay_seconds = time.monotonic() - started
    replayed_events = replayer.events
    _catch_up(conn, replayer, report)
    _set_bulk_load(es, data_indices, on=False)
    previous = _swap_fenced(conn, es, names, version, replayer, report)
    deleted = () if keep_old else _delete_indices(es, previous)
    return RebuildReport(
        old_indices=tuple(previous),
        new_version=version,
        head_position=head,
        final_position=replayer.position,
        events=replayer.events,
        accounts=sum(1 for document in replayer.documents.values() if document is not None),
        replayed_events=replayed_events,
        replay_seconds=replay_seconds,
        total_seconds=time.monotonic() - started,
        deleted=deleted,
    )


def _catch_up(conn: psycopg.Connection[Any], replayer: _Replayer, report: _Report) -> None:
    """Replays the events committed during the replay, a few bounded rounds, until few
    enough are left for the fenced catch-up to be short."""
    for _ in range(CATCH_UP_ROUNDS_MAX):
        target = head_position(conn)
        small_enough = target - replayer.position < CATCH_UP_SMALL_ENOUGH
        replayer.replay(target, on_batch=report("catch-up", target))
        if small_enough:
            return


def _swap_fenced(
    conn: psycopg.Connection[Any],
    es: Elasticsearch,
    names: IndexNames,
    version: int,
    replayer: _Replayer,
    report: _Report,
) -> list[str]:
    """Steps 4 to 6 (module docstring): fence, catch up, swap, catch up again, unfence.

    Returns:
        The index versions the aliases pointed to before.
    """
    fence_watermarks(es, names, on=True)
    try:
        target = head_position(conn)
        replayer.replay(target, on_batch=report("fenced catch-up", target), refresh=True)
        _refresh(es, [index for _, index, _ in names.data_versions(version)])
        previous = swap_aliases(es, names, version)
        target = head_position(conn)
        replayer.replay(
            target,
            on_batch=report("after swap", target),
            version_type="external_gte",
            refresh="wait_for",
        )
    finally:
        fence_watermarks(es, names, on=False)
    return previous


def _delete_indices(es: Elasticsearch, indices: list[str]) -> tuple[str, ...]:
    """Deletes ``indices`` (the old versions); returns what was deleted."""
    if not indices:
        return ()
    try:
        es.indices.delete(index=",".join(indices))
    except (ApiError, TransportError) as error:
        raise translate(error, "deleting old index versions") from error
    return tuple(indices)
