"""Holds' metadata in a real Elasticsearch: a pending index an older version created
gains the field in place, and a hold is found by exact match on all the pairs given,
with the filters ListPendingTransfers builds."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

from chronos.read_model.indices import (
    ACCOUNTS_MAPPING,
    PENDING_MAPPING,
    TRANSACTIONS_MAPPING,
    IndexNames,
    ensure_indices,
    index_settings,
)
from chronos.read_model.queries import metadata_filters

# A mapping without its metadata field, as it was before (here: the pending index's).
from tests.integration.test_line_metadata_index import old_mapping


def hold(pending_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
    source: dict[str, Any] = {
        "pending_id": pending_id,
        "from_account_id": "a",
        "to_account_id": "b",
        "currency": "EUR",
        "amount_minor": 10,
        "posted_minor": 0,
        "state": "PENDING",
        "description": "",
        "placed_at": "2026-03-01T12:00:00.000000Z",
        "updated_at": "2026-03-01T12:00:00.000000Z",
        "last_position": 1,
        "version": 2,
    }
    if metadata is not None:
        source["metadata"] = metadata
    return source


def test_an_old_pending_index_gains_the_field_and_holds_filter_by_exact_match(
    es_client: Elasticsearch, names: IndexNames
) -> None:
    for alias, index, mapping in (
        (names.accounts, names.accounts_version(1), ACCOUNTS_MAPPING),
        (names.transactions, names.transactions_version(1), TRANSACTIONS_MAPPING),
        (names.pending, names.pending_version(1), old_mapping(PENDING_MAPPING)),
    ):
        es_client.indices.create(
            index=index,
            mappings=mapping,
            settings=index_settings(),
            aliases={alias: {"is_write_index": True}},
        )
    es_client.index(index=names.pending, id="old", document=hold("old", None))

    assert ensure_indices(es_client, names) == 1

    mapping = es_client.indices.get_mapping(index=names.pending_version(1))
    properties = mapping[names.pending_version(1)]["mappings"]["properties"]
    assert properties["metadata"] == {"type": "flattened"}
    documents = {
        "a17": {"order_id": "A-17", "shop": "north"},
        "a17-south": {"order_id": "A-17", "shop": "south"},
        "a170": {"order_id": "A-170"},
    }
    for pending_id, metadata in documents.items():
        es_client.index(index=names.pending, id=pending_id, document=hold(pending_id, metadata))
    es_client.indices.refresh(index=names.pending)

    def matching(pairs: tuple[tuple[str, str], ...]) -> set[str]:
        query = {"bool": {"filter": metadata_filters(pairs)}}
        response = es_client.search(index=names.pending, query=query)
        return {hit["_id"] for hit in response["hits"]["hits"]}

    assert matching((("order_id", "A-17"),)) == {"a17", "a17-south"}
    assert matching((("order_id", "A-17"), ("shop", "north"))) == {"a17"}
    assert matching((("order_id", "B"),)) == set()
    assert matching(()) == {"old", *documents}
