"""One batch's events applied to the account documents and statement lines.

The fold needs each account's current document: the one this process wrote last when
the batch continues it (``projector.cache``), else the stored one. When an account's
events skip a version (Kafka delivered a later event first), that account's events are
read from the event store instead (``chronos.read_model.history``), so a document never
folds across a gap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from chronos.metrics import PROJECTION_GAPS_FILLED
from chronos.read_model.documents import AccountDocument, EventRecord, Outcome, fold_batch
from chronos.read_model.es_writer import EsWriter, WriteResult
from chronos.read_model.history import GAP_EVENTS_MAX, StreamHistory
from projector.cache import DocumentCache
from projector.errors import ProjectorError

_logger = logging.getLogger(__name__)


class DocumentApplier:
    """Folds a batch onto the current documents and bulk-writes the result.

    Args:
        writer: The Elasticsearch writer (through the aliases).
        history: The event store's streams, read to fill a version gap.
        cache: The documents this process wrote last.
        refresh: The bulks' ``refresh`` (False: the projector refreshes on its own).
    """

    def __init__(
        self,
        writer: EsWriter,
        history: StreamHistory,
        cache: DocumentCache,
        *,
        refresh: str | bool,
    ) -> None:
        self._writer = writer
        self._history = history
        self._cache = cache
        self._refresh = refresh

    def apply(
        self,
        records: list[EventRecord],
        events: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> tuple[WriteResult, dict[Outcome, int]]:
        """Writes what ``records`` make of the documents, and the event-log documents
        ``events`` (position, source), in the same bulk; idempotent and version-guarded,
        so a redelivered batch is harmless.

        Raises:
            ProjectorError: the event store lacks versions Kafka delivered later ones of,
                or a gap is too long to fill.
            ReadModelUnavailable, EventStoreUnavailable: worth a retry.
        """
        current = self._current_documents(records)
        records = with_gaps_filled(current, records, self._history)
        documents = fold_batch(current, records)
        if documents.outcomes[Outcome.GAP] or documents.outcomes[Outcome.ORPHAN]:
            raise ProjectorError(
                "the event store lacks versions of a stream whose later events Kafka "
                "delivered; the projector stops rather than fold across the gap"
            )
        result = self._writer.write_documents(
            documents.accounts,
            documents.transactions,
            refresh=self._refresh,
            holds=documents.holds,
            events=events,
        )
        if not result.accounts_stale:
            # Else another writer got there first, and what it stored is what counts: the
            # cache keeps the states before this batch, which no later event continues.
            self._cache.remember(documents.accounts)
        return result, documents.outcomes

    def _current_documents(self, records: list[EventRecord]) -> dict[str, AccountDocument | None]:
        """The stored document of each account of ``records``: cached, else read."""
        first_versions: dict[str, int] = {}
        for record in records:
            first_versions.setdefault(record.stream_id, record.stream_version)
        current, missing = self._cache.continuing(first_versions)
        if missing:
            current.update(self._writer.get_accounts(missing))
        return current


def with_gaps_filled(
    current: dict[str, AccountDocument | None],
    records: list[EventRecord],
    history: StreamHistory,
) -> list[EventRecord]:
    """``records``, where an account's events skip a version, with that account's events
    replaced by its stream read from the event store up to the batch's newest version of
    it: the fold then sees every version in order.

    Raises:
        ProjectorError: a gap spans more than ``GAP_EVENTS_MAX`` events.
    """
    gaps = _gaps(current, records)
    if not gaps:
        return records
    filled = [record for record in records if record.stream_id not in gaps]
    for account_id, up_to_version in gaps.items():
        document = current[account_id]
        after_version = 0 if document is None else document.version
        if up_to_version - after_version > GAP_EVENTS_MAX:
            raise ProjectorError(
                f"account {account_id}: the document is at version {after_version} and "
                f"Kafka delivered version {up_to_version}; run `chronos projection rebuild`"
            )
        filled.extend(
            history.events(account_id, after_version=after_version, up_to_version=up_to_version)
        )
    PROJECTION_GAPS_FILLED.inc(len(gaps))
    _logger.info("filled version gaps of %d accounts from the event store", len(gaps))
    return filled


def _gaps(current: dict[str, AccountDocument | None], records: list[EventRecord]) -> dict[str, int]:
    """The accounts whose events skip a version, each with the batch's newest version."""
    next_version = {
        account_id: (0 if document is None else document.version) + 1
        for account_id, document in current.items()
    }
    gaps: dict[str, int] = {}
    for record in records:
        expected = next_version[record.stream_id]
        if record.stream_id in gaps:
            gaps[record.stream_id] = max(gaps[record.stream_id], record.stream_version)
        elif record.stream_version == expected:
            next_version[record.stream_id] = expected + 1
        elif record.stream_version > expected:
            gaps[record.stream_id] = record.stream_version
    return gaps
