"""The projector's two watermarks per partition, and the writes that move them.

* **Applied**: written after each batch's bulk returned, so a reader that sees
  watermark P can read every event <= P by id.
* **Searchable**: advanced to the applied one after a refresh made those documents
  searchable (or at once when the bulks refresh themselves).

While a rebuild swaps the aliases it fences the watermarks (``WatermarksFenced``):
applied positions are then held back and written with the next batch, searchable ones
stay pending until the next refresh. Both maps are read by the background refresher
while the main loop moves them, hence the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from chronos.metrics import PROJECTION_SEARCH_LAG, PROJECTION_WATERMARK
from chronos.read_model.es_writer import EsWriter, WatermarksFenced
from chronos.read_model.watermark import APPLIED, SEARCHABLE
from projector.retrying import Retrying

_logger = logging.getLogger(__name__)

# Commit times kept for the search lag until their events are searchable (bounded, so a
# long fence or outage cannot grow them without limit).
_SEARCH_LAG_SAMPLES_MAX = 10_000
# What the retry log says each kind of write was doing.
_WRITING = {APPLIED: "writing watermarks", SEARCHABLE: "writing searchable watermarks"}


class ProjectedWatermarks:
    """This process's applied and searchable watermark of each partition.

    Args:
        writer: The Elasticsearch writer.
        topic: The events topic (watermark documents are per topic and partition).
        partition_count: The topic's current partition count (it can grow).
        retrying: Retries the writes while Elasticsearch is unavailable.
        refresh_first: Refresh the indices before advancing the searchable watermarks
            (the bulks did not refresh).
        clock: Wall clock (injected so tests control it).
    """

    def __init__(
        self,
        writer: EsWriter,
        topic: str,
        *,
        partition_count: Callable[[], int],
        retrying: Retrying,
        refresh_first: bool,
        clock: Callable[[], datetime],
    ) -> None:
        self._writer = writer
        self._topic = topic
        self._partition_count = partition_count
        self._retrying = retrying
        self._refresh_first = refresh_first
        self._clock = clock
        self._lock = threading.Lock()
        self._applied: dict[int, int] = {}
        self._searchable: dict[int, int] = {}
        # Commit times of applied events not yet searchable, for the search lag.
        self._not_searchable: list[datetime] = []
        # Applied watermarks a rebuild's fence refused, written with the next batch
        # (the main loop's alone).
        self._applied_unwritten: dict[int, int] = {}

    def write_applied(self, positions: dict[int, int]) -> dict[int, int]:
        """Writes this batch's applied watermarks and any a fence held back; call only
        once the batch's documents are written.

        Returns:
            What was written (nothing while a rebuild fences the watermarks).
        """
        pending = dict(self._applied_unwritten)
        for partition, position in positions.items():
            pending[partition] = max(pending.get(partition, 0), position)
        if not pending:
            return {}
        try:
            self._write(APPLIED, pending)
        except WatermarksFenced:
            _logger.info("watermarks fenced by a rebuild's alias swap; holding them back")
            self._applied_unwritten = pending
            return {}
        self._applied_unwritten = {}
        return pending

    def record_applied(self, written: dict[int, int], recorded_at: list[datetime]) -> None:
        """Takes note of the applied watermarks ``written`` and of the commit times of
        the events applied with them, which wait to become searchable."""
        with self._lock:
            room = _SEARCH_LAG_SAMPLES_MAX - len(self._not_searchable)
            self._not_searchable.extend(recorded_at[:room])
            for partition, position in written.items():
                self._applied[partition] = max(self._applied.get(partition, 0), position)
            lowest = min(self._applied.values(), default=None)
        if lowest is not None:
            PROJECTION_WATERMARK.set(lowest)

    def make_searchable(self) -> None:
        """Advances the searchable watermarks to the applied ones, refreshing the indices
        first when the bulks did not. Thread-safe: the background refresher calls it
        while the main loop keeps applying batches."""
        with self._lock:
            pending = {
                partition: position
                for partition, position in self._applied.items()
                if position > self._searchable.get(partition, -1)
            }
            samples, self._not_searchable = self._not_searchable, []
        if not pending:
            return
        if self._refresh_first:
            # Everything up to `pending` was acknowledged before this refresh starts, so
            # the refresh makes it searchable.
            self._retrying("refreshing", self._writer.refresh_data)
        try:
            self._write(SEARCHABLE, pending)
        except WatermarksFenced:
            # Tried again at the next refresh: the positions stay pending.
            with self._lock:
                self._not_searchable.extend(samples)
            return
        with self._lock:
            for partition, position in pending.items():
                self._searchable[partition] = max(self._searchable.get(partition, 0), position)
        searchable_at = self._clock()
        for committed_at in samples:
            PROJECTION_SEARCH_LAG.observe(max(0.0, (searchable_at - committed_at).total_seconds()))

    def _write(self, kind: str, positions: dict[int, int]) -> None:
        """Writes the watermarks of ``kind``, retried while Elasticsearch is unavailable.

        Raises:
            WatermarksFenced: a rebuild is swapping the aliases.
        """
        self._retrying(
            _WRITING[kind],
            lambda: self._writer.write_watermarks(
                self._topic, self._partition_count(), positions, kind=kind
            ),
        )
