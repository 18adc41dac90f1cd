"""How far the projection has got: per-partition watermarks and the visible position.

The projector keeps two documents per Kafka partition in the projection index (see
``APPLIED`` and ``SEARCHABLE``): ``position`` is the highest position of any event or
marker whose documents are written (applied) or also searchable there, and
``partition_count`` the topic's partition count when it wrote. Following
``chronos.outbox.contract``, position P is visible once *every* partition's watermark
is >= P; a partition with no document yet counts as 0.

Reads are realtime GETs (``mget``), so they need no index refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, Elasticsearch, TransportError

from chronos.read_model import ReadModelError
from chronos.read_model.indices import IndexNames, translate

PARTITION_COUNT_MAX = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Watermarks:
    """Every partition's watermark as read at one moment."""

    partition_count: int
    positions: dict[int, int]

    @property
    def visible_position(self) -> int:
        """The highest P such that every partition's watermark is >= P (0 if unknown)."""
        if self.partition_count == 0:
            return 0
        return min(self.positions.get(p, 0) for p in range(self.partition_count))

    def visible(self, position: int) -> bool:
        """Whether every event with a position <= ``position`` is searchable."""
        return position <= self.visible_position


# Two watermarks per partition. "applied": the partition's documents up to the position are
# written and can be read by id (realtime GET: GetAccount). "searchable": they are also
# visible to searches (statement lines, balance-at-time, account search), which takes an
# index refresh; the projector refreshes on an interval and then advances this one.
APPLIED = "applied"
SEARCHABLE = "searchable"
_ID_PREFIX = {APPLIED: "", SEARCHABLE: "s"}


def watermark_id(partition: int, kind: str) -> str:
    return f"{_ID_PREFIX[kind]}{partition}"


def _ids(partition_count: int, kind: str) -> list[str]:
    return [watermark_id(p, kind) for p in range(max(partition_count, 1))]


def _parse(response: Any, known_count: int) -> Watermarks:
    positions: dict[int, int] = {}
    count = known_count
    for doc in response["docs"]:
        if "error" in doc:
            raise ReadModelError(f"reading watermarks: {doc['error']}")
        if doc.get("found"):
            source = doc["_source"]
            positions[int(source["partition"])] = int(source["position"])
            # Partitions are only ever added, so the largest count seen is the current one.
            count = max(count, int(source["partition_count"]))
    if count > PARTITION_COUNT_MAX:
        raise ReadModelError(f"watermarks name {count} partitions, more than the limit")
    return Watermarks(partition_count=count, positions=positions)


class _WatermarkIds:
    """Which watermark documents to read, and the partition count learnt from them."""

    def __init__(self, names: IndexNames, kind: str) -> None:
        assert kind in _ID_PREFIX
        self._names = names
        self._kind = kind
        self._partition_count = 0

    def docs(self) -> list[dict[str, str]]:
        """The ``mget`` items of the watermarks, so that they can share a request."""
        index = self._names.projection
        return [{"_index": index, "_id": i} for i in _ids(self._partition_count, self._kind)]

    def accept(self, docs: list[Any]) -> Watermarks | None:
        """Parses what ``docs()`` read; None when the partition count grew (read again)."""
        watermarks = _parse({"docs": docs}, self._partition_count)
        grew = watermarks.partition_count > max(self._partition_count, 1)
        self._partition_count = watermarks.partition_count
        return None if grew else watermarks


class WatermarkReader(_WatermarkIds):
    """Reads the watermarks with a synchronous client (reconcile, rebuild, tests)."""

    def __init__(self, es: Elasticsearch, names: IndexNames, kind: str = SEARCHABLE) -> None:
        super().__init__(names, kind)
        self._es = es

    def read(self) -> Watermarks:
        """The current watermarks (two round trips only when the partition count grows)."""
        while True:
            try:
                response = self._es.mget(docs=self.docs(), realtime=True)
            except (ApiError, TransportError) as error:
                raise translate(error, "reading watermarks") from error
            watermarks = self.accept(response["docs"])
            if watermarks is not None:
                return watermarks


class AsyncWatermarkReader(_WatermarkIds):
    """Reads the watermarks with the async client (query server)."""

    def __init__(self, es: AsyncElasticsearch, names: IndexNames, kind: str = SEARCHABLE) -> None:
        super().__init__(names, kind)
        self._es = es

    async def read(self) -> Watermarks:
        """The current watermarks; raises the translated client error on failure."""
        while True:
            try:
                response = await self._es.mget(docs=self.docs(), realtime=True)
            except (ApiError, TransportError) as error:
                raise translate(error, "reading watermarks") from error
            watermarks = self.accept(response["docs"])
            if watermarks is not None:
                return watermarks
