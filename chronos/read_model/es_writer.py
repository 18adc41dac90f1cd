"""Writes read-side documents to Elasticsearch with the bulk API.

Idempotent and order-safe by construction:

* account documents are indexed with ``version_type=external`` and ``version`` = the
  stream version they reflect, so a duplicate or stale write is refused with 409,
  which is expected and ignored;
* statement lines are created with ``_id`` = event id (``op_type=create``), so a
  redelivered line is refused with 409, also ignored; so are event-log documents, with
  ``_id`` = position;
* watermark documents use the position as external version, so they only move forward;
  while a rebuild swaps the aliases it blocks writes to the watermark index (a fence),
  and a watermark write then raises :class:`WatermarksFenced` to be tried again later.

Any other per-item failure raises: nothing is silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from chronos.read_model import ReadModelError, ReadModelUnavailable
from chronos.read_model.documents import AccountDocument, format_time
from chronos.read_model.indices import IndexNames, found_documents, translate
from chronos.read_model.watermark import SEARCHABLE, watermark_id

_logger = logging.getLogger(__name__)

BULK_ACTIONS_MAX = 5000
MGET_IDS_MAX = 5000
_TRANSIENT_ITEM_STATUSES = frozenset({429, 502, 503, 504})
# Only what the writers read of a bulk answer: each item's status, and its error when it
# failed (a full item also carries its index, id, version, sequence number and shard
# counts): the filtered answer saves the writer decoding work, at no cost measurable in
# Elasticsearch. (On mget answers the same filter cost Elasticsearch more than it saved
# the reader, so reads are not filtered.)
BULK_RESPONSE_FILTER = "items.*.status,items.*.error"


class WatermarksFenced(ReadModelError):
    """A rebuild is swapping the aliases: watermarks must not move until it is done."""


# Elasticsearch's error type for a write refused by an index block.
_BLOCKED = "cluster_block_exception"


def fence_watermarks(es: Elasticsearch, names: IndexNames, *, on: bool) -> None:
    """Blocks (or unblocks) writes to the watermark index.

    The rebuild fences the watermarks from just before its final catch-up to the end of
    the alias swap: whatever a watermark claims is then already in the new version when
    the aliases move to it.
    """
    try:
        es.indices.put_settings(
            index=names.projection, settings={"index": {"blocks": {"write": on or None}}}
        )
    except (ApiError, TransportError) as error:
        raise translate(error, "fencing the watermarks") from error


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """What one write did, item by item."""

    accounts_written: int = 0
    # Refused because the stored document already has this or a newer version.
    accounts_stale: int = 0
    transactions_written: int = 0
    # Refused because the line already exists (redelivery).
    transactions_duplicate: int = 0
    # Hold documents, versioned like account documents.
    holds_written: int = 0
    holds_stale: int = 0
    # Event-log documents, created like statement lines.
    events_written: int = 0
    events_duplicate: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            accounts_written=self.accounts_written + other.accounts_written,
            accounts_stale=self.accounts_stale + other.accounts_stale,
            transactions_written=self.transactions_written + other.transactions_written,
            transactions_duplicate=self.transactions_duplicate + other.transactions_duplicate,
            holds_written=self.holds_written + other.holds_written,
            holds_stale=self.holds_stale + other.holds_stale,
            events_written=self.events_written + other.events_written,
            events_duplicate=self.events_duplicate + other.events_duplicate,
        )


class EsWriter:
    """Reads current account documents and bulk-writes the read model.

    Args:
        es: A synchronous client (the projector and the rebuild are synchronous loops).
        names: Index names; writes go through the aliases unless a call names
            concrete indices.
    """

    def __init__(self, es: Elasticsearch, names: IndexNames) -> None:
        self._es = es
        self._names = names

    def get_accounts(
        self, account_ids: Iterable[str], *, index: str | None = None
    ) -> dict[str, AccountDocument | None]:
        """The stored document of each account (realtime, no refresh needed)."""
        ids = list(dict.fromkeys(account_ids))
        assert len(ids) <= MGET_IDS_MAX, "mget batch too large"
        result: dict[str, AccountDocument | None] = dict.fromkeys(ids)
        if not ids:
            return result
        target = index or self._names.accounts
        try:
            response = self._es.mget(index=target, ids=ids, realtime=True)
        except (ApiError, TransportError) as error:
            raise translate(error, f"mget on {target}") from error
        for account_id, doc in found_documents(response["docs"], f"mget on {target}").items():
            document = AccountDocument.from_source(doc["_source"])
            # The external version and the document's own version are written together.
            assert document.version == doc["_version"], f"account {account_id} out of sync"
            result[account_id] = document
        return result

    def write_documents(
        self,
        accounts: Sequence[AccountDocument],
        transactions: Sequence[tuple[str, dict[str, Any]]],
        *,
        refresh: str | bool,
        accounts_index: str | None = None,
        transactions_index: str | None = None,
        version_type: str = "external",
        holds: Sequence[tuple[str, int, dict[str, Any]]] = (),
        holds_index: str | None = None,
        events: Sequence[tuple[int, dict[str, Any]]] = (),
        events_index: str | None = None,
    ) -> WriteResult:
        """Bulk-writes account documents (versioned) and statement lines (create).

        Args:
            accounts: Full account documents; each is written with its ``version``.
            transactions: ``(event_id, source)`` pairs.
            refresh: Passed to the bulk API: ``True`` or ``"wait_for"`` make the call
                return once the documents are searchable (the projector's
                read-your-writes needs it), ``False`` for the rebuild's bulk load.
            accounts_index: A concrete index instead of the alias (rebuild).
            transactions_index: A concrete index instead of the alias (rebuild).
            holds: ``(pending_id, version, source)`` of hold documents, each written
                with its version like an account document.
            holds_index: A concrete index instead of the alias (rebuild).
            events: ``(position, source)`` of event-log documents (created).
            events_index: A concrete index instead of the alias (rebuild).
            version_type: ``external`` (strictly newer wins); the rebuild's catch-up
                after the alias swap uses ``external_gte`` so its document, folded
                from the event store, replaces a same-version one the projector
                folded across a gap.

        Raises:
            ReadModelUnavailable: Elasticsearch is unreachable or overloaded (retry).
            ReadModelError: an item failed for another reason.
        """
        assert version_type in ("external", "external_gte")
        accounts_target = accounts_index or self._names.accounts
        transactions_target = transactions_index or self._names.transactions
        holds_target = holds_index or self._names.pending
        events_target = events_index or self._names.events
        operations = _operations(
            accounts,
            transactions,
            holds,
            (accounts_target, transactions_target, holds_target),
            version_type,
        )
        operations.extend(_event_operations(events, events_target))
        result = WriteResult()
        # Only the last chunk waits for the refresh: the refresh it waits for makes the
        # earlier chunks searchable too.
        chunk = 2 * BULK_ACTIONS_MAX
        for start in range(0, len(operations), chunk):
            last = start + chunk >= len(operations)
            result += self._bulk(
                operations[start : start + chunk],
                refresh=refresh if last else False,
                require_alias=accounts_index is None
                and transactions_index is None
                and holds_index is None
                and events_index is None,
                holds_target=holds_target,
                events_target=events_target,
            )
        return result

    def _bulk(
        self,
        operations: list[dict[str, Any]],
        *,
        refresh: str | bool,
        require_alias: bool,
        holds_target: str = "",
        events_target: str = "",
    ) -> WriteResult:
        try:
            response = self._es.bulk(
                operations=operations,
                refresh=refresh,
                require_alias=require_alias,
                filter_path=BULK_RESPONSE_FILTER,
            )
        except (ApiError, TransportError) as error:
            raise translate(error, "bulk write") from error
        accounts_written = accounts_stale = lines_written = lines_duplicate = 0
        holds: dict[int, int] = {}  # status class (2 or 4) -> hold documents
        events: dict[int, int] = {}  # status class (2 or 4) -> event-log documents
        transient: list[str] = []
        failed: list[str] = []
        # Items answer the actions in request order; the filtered response leaves out
        # their index and id, which the request has.
        for item, request in zip(response["items"], operations[0::2], strict=True):
            (action, outcome), *_ = item.items()
            (target,) = request.values()
            status = int(outcome["status"])
            if target["_index"] == holds_target and (200 <= status < 300 or status == 409):
                holds[status // 100] = holds.get(status // 100, 0) + 1
            elif target["_index"] == events_target and (200 <= status < 300 or status == 409):
                events[status // 100] = events.get(status // 100, 0) + 1
            elif 200 <= status < 300:
                if action == "index":
                    accounts_written += 1
                else:
                    lines_written += 1
            elif status == 409:
                if action == "index":
                    accounts_stale += 1
                else:
                    lines_duplicate += 1
            elif status in _TRANSIENT_ITEM_STATUSES:
                transient.append(f"{target['_id']}: {outcome.get('error')}")
            else:
                failed.append(f"{target['_index']}/{target['_id']}: {outcome.get('error')}")
        if failed:
            raise ReadModelError(f"bulk write: {len(failed)} items failed, first: {failed[0]}")
        if transient:
            raise ReadModelUnavailable(
                f"bulk write: {len(transient)} items refused (overload), first: {transient[0]}"
            )
        return WriteResult(
            accounts_written=accounts_written,
            accounts_stale=accounts_stale,
            transactions_written=lines_written,
            transactions_duplicate=lines_duplicate,
            holds_written=holds.get(2, 0),
            holds_stale=holds.get(4, 0),
            events_written=events.get(2, 0),
            events_duplicate=events.get(4, 0),
        )

    def refresh_data(self) -> None:
        """Makes every document written so far visible to searches (both data indices)."""
        try:
            self._es.indices.refresh(index=",".join(self._names.data_aliases))
        except (ApiError, TransportError) as error:
            raise translate(error, "refreshing the read model") from error

    def write_watermarks(
        self,
        topic: str,
        partition_count: int,
        positions: dict[int, int],
        *,
        kind: str = SEARCHABLE,
    ) -> None:
        """Records each partition's watermark of ``kind`` (monotonic: external version =
        position).

        Call only after the data documents up to these positions are written (APPLIED)
        or written and refreshed (SEARCHABLE).
        """
        if not positions:
            return
        now = format_time(datetime.now(UTC))
        operations: list[dict[str, Any]] = []
        for partition, position in sorted(positions.items()):
            assert 0 <= partition < partition_count and position >= 0
            operations.append(
                {
                    "index": {
                        "_index": self._names.projection,
                        "_id": watermark_id(partition, kind),
                        "version": position,
                        "version_type": "external",
                    }
                }
            )
            operations.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "partition_count": partition_count,
                    "position": position,
                    "updated_at": now,
                }
            )
        try:
            response = self._es.bulk(
                operations=operations, refresh=False, filter_path=BULK_RESPONSE_FILTER
            )
        except (ApiError, TransportError) as error:
            if _BLOCKED in str(error):
                raise WatermarksFenced("a rebuild is swapping the aliases") from error
            raise translate(error, "writing watermarks") from error
        for item in response["items"]:
            outcome = item["index"]
            status = int(outcome["status"])
            if _BLOCKED in str(outcome.get("error", "")):
                raise WatermarksFenced("a rebuild is swapping the aliases")
            # 409: another projector instance (or our own earlier write) is already ahead.
            if not (200 <= status < 300 or status == 409):
                if status in _TRANSIENT_ITEM_STATUSES:
                    raise ReadModelUnavailable(f"writing watermarks: {outcome.get('error')}")
                raise ReadModelError(f"writing watermarks: {outcome.get('error')}")


def _operations(
    accounts: Sequence[AccountDocument],
    transactions: Sequence[tuple[str, dict[str, Any]]],
    holds: Sequence[tuple[str, int, dict[str, Any]]],
    targets: tuple[str, str, str],
    version_type: str,
) -> list[dict[str, Any]]:
    """The bulk actions of a write: account and hold documents versioned, lines created."""
    accounts_target, transactions_target, holds_target = targets
    operations: list[dict[str, Any]] = []
    for document in accounts:
        operations.append(
            {
                "index": {
                    "_index": accounts_target,
                    "_id": document.account_id,
                    "version": document.version,
                    "version_type": version_type,
                }
            }
        )
        operations.append(document.to_source())
    for event_id, source in transactions:
        operations.append({"create": {"_index": transactions_target, "_id": event_id}})
        operations.append(source)
    for pending_id, version, source in holds:
        operations.append(
            {
                "index": {
                    "_index": holds_target,
                    "_id": pending_id,
                    "version": version,
                    "version_type": "external",
                }
            }
        )
        operations.append(source)
    return operations


def _event_operations(
    events: Sequence[tuple[int, dict[str, Any]]], target: str
) -> list[dict[str, Any]]:
    """The bulk actions creating event-log documents (id = position)."""
    operations: list[dict[str, Any]] = []
    for position, source in events:
        operations.append({"create": {"_index": target, "_id": str(position)}})
        operations.append(source)
    return operations
