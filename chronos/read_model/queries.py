"""The query server's reads of the read model: Elasticsearch query DSL, nothing else.

Queries return Elasticsearch documents (``_source`` dictionaries); turning them into
protobuf is the query server's job (``query_server.mapping``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from chronos.domain.events import AccountKind
from chronos.read_model.coalesce import CoalescingGetter
from chronos.read_model.event_queries import EventLogQueries
from chronos.read_model.indices import IndexNames, found_documents, translate
from chronos.read_model.watermark_cache import WatermarkCache

# Account lookups coalesced into one multi-get, and multi-gets at once per process. With
# one in flight the calls queue behind it and go together, in batches large enough to
# pay; with two in flight the batches stayed at a few ids each.
MGET_IDS_MAX = 500
MGETS_IN_FLIGHT_MAX = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """One page of search hits, and how many documents match in all."""

    hits: list[dict[str, Any]]
    total: int


class ReadModelQueries:
    """The query server's reads (async client).

    Reads by account id are coalesced (``chronos.read_model.coalesce``): the calls that arrive
    while a multi-get is in flight share the next one, which also reads the watermarks of
    ``piggybacked`` (so that, under load, the cached watermark needs no reads of its own).
    """

    def __init__(
        self,
        es: AsyncElasticsearch,
        names: IndexNames,
        *,
        piggybacked: WatermarkCache | None = None,
        ids_per_mget_max: int = MGET_IDS_MAX,
        mgets_in_flight_max: int = MGETS_IN_FLIGHT_MAX,
        linger_seconds: float = 0.0,
    ) -> None:
        self._es = es
        self._names = names
        self._piggybacked = piggybacked
        self._accounts = CoalescingGetter(
            self._get_accounts,
            keys_per_fetch_max=ids_per_mget_max,
            fetches_in_flight_max=mgets_in_flight_max,
            linger_seconds=linger_seconds,
        )

    async def _call(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except (ApiError, TransportError) as error:
            raise translate(error, what) from error

    async def _get_accounts(self, account_ids: list[str]) -> dict[str, dict[str, Any]]:
        watermark_docs: list[dict[str, str]] = []
        if self._piggybacked is not None:
            watermark_docs, accept_watermarks = self._piggybacked.piggyback()
        index = self._names.accounts
        docs = [*watermark_docs, *({"_index": index, "_id": i} for i in account_ids)]
        response = await self._call("get accounts", self._es.mget(docs=docs, realtime=True))
        read = response.body["docs"]
        if watermark_docs:
            accept_watermarks(read[: len(watermark_docs)])
        return {
            account_id: doc["_source"]
            for account_id, doc in found_documents(
                read[len(watermark_docs) :], "get accounts"
            ).items()
        }

    async def get_account(self, account_id: str) -> dict[str, Any] | None:
        """The account document (realtime: no refresh needed), None if unknown.

        The lookup is sent after this call began, so the document is at least as new as
        any watermark the caller read before calling.
        """
        return await self._accounts.get(account_id)

    def event_log(self) -> EventLogQueries:
        """Reads of the event log through the same client."""
        return EventLogQueries(self._es, self._names)

    async def close(self) -> None:
        """Cancels the account lookups in flight (the client itself is the caller's)."""
        await self._accounts.close()

    async def lines(
        self,
        account_id: str,
        *,
        start: str | None,
        end: str | None,
        size: int,
        search_after: list[Any] | None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> list[dict[str, Any]]:
        """Statement lines of an account, newest (highest position) first; only those
        whose metadata holds every pair of ``metadata`` (exact match)."""
        filters: list[dict[str, Any]] = [{"term": {"account_id": account_id}}]
        filters.extend(metadata_filters(metadata))
        time_range: dict[str, str] = {}
        if start is not None:
            time_range["gte"] = start
        if end is not None:
            time_range["lt"] = end
        if time_range:
            filters.append({"range": {"recorded_at": time_range}})
        response = await self._call(
            "list transactions",
            self._es.search(
                index=self._names.transactions,
                query={"bool": {"filter": filters}},
                sort=[{"position": "desc"}],
                size=size,
                search_after=search_after,
                track_total_hits=False,
            ),
        )
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    async def pending_transfers(
        self,
        account_id: str,
        *,
        state: str | None,
        size: int,
        search_after: list[Any] | None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> list[dict[str, Any]]:
        """The holds an account is the from or the to account of, newest placed first;
        only those whose metadata holds every pair of ``metadata`` (exact match)."""
        filters: list[dict[str, Any]] = [
            {
                "bool": {
                    "should": [
                        {"term": {"from_account_id": account_id}},
                        {"term": {"to_account_id": account_id}},
                    ],
                    "minimum_should_match": 1,
                }
            }
        ]
        if state is not None:
            filters.append({"term": {"state": state}})
        filters.extend(metadata_filters(metadata))
        response = await self._call(
            "list pending transfers",
            self._es.search(
                index=self._names.pending,
                query={"bool": {"filter": filters}},
                sort=[{"placed_at": "desc"}, {"pending_id": "asc"}],
                size=size,
                search_after=search_after,
                track_total_hits=False,
            ),
        )
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    async def line_at(self, account_id: str, at: str) -> dict[str, Any] | None:
        """The account's last line recorded at or before ``at``."""
        response = await self._call(
            "balance at",
            self._es.search(
                index=self._names.transactions,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"account_id": account_id}},
                            {"range": {"recorded_at": {"lte": at}}},
                        ]
                    }
                },
                sort=[{"position": "desc"}],
                size=1,
                track_total_hits=False,
            ),
        )
        hits = response["hits"]["hits"]
        return hits[0]["_source"] if hits else None

    async def search_accounts(
        self,
        *,
        text: str,
        status: str | None,
        currency: str | None,
        size: int,
        search_after: list[Any] | None,
    ) -> Page:
        """User accounts matching ``text`` on the owner name, best match first."""
        filters: list[dict[str, Any]] = []
        if status is not None:
            filters.append({"term": {"status": status}})
        if currency is not None:
            filters.append({"term": {"currency": currency}})
        must: list[dict[str, Any]] = []
        if text:
            must.append(
                {"match": {"owner_name": {"query": text, "operator": "and", "fuzziness": "AUTO"}}}
            )
        query = {
            "bool": {
                "must": must or [{"match_all": {}}],
                "filter": filters,
                "must_not": [{"term": {"kind": AccountKind.SYSTEM.value}}],
            }
        }
        response = await self._call(
            "search accounts",
            self._es.search(
                index=self._names.accounts,
                query=query,
                # account_id breaks ties so pages never overlap or skip.
                sort=[{"_score": "desc"}, {"account_id": "asc"}],
                size=size,
                search_after=search_after,
                track_total_hits=True,
            ),
        )
        return Page(hits=response["hits"]["hits"], total=int(response["hits"]["total"]["value"]))


# --- protobuf mapping ----------------------------------------------------------------


def metadata_filters(metadata: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    """The exact-match filters of a metadata filter (a ``flattened`` field named
    ``metadata``): a document matches when it holds every pair."""
    return [{"term": {f"metadata.{key}": value}} for key, value in metadata]
