"""The holds' read-side index against a real Elasticsearch: a read model created before
holds existed gains it in place."""

from __future__ import annotations

from elasticsearch import Elasticsearch

from chronos.read_model.indices import (
    ACCOUNTS_MAPPING,
    TRANSACTIONS_MAPPING,
    IndexNames,
    alias_targets,
    ensure_indices,
    index_settings,
)


def test_ensure_indices_adds_the_holds_index_to_an_older_read_model(
    es_client: Elasticsearch, names: IndexNames
) -> None:
    # What an older version created: two data indices at version 1, with their aliases.
    for alias, index, mapping in (
        (names.accounts, names.accounts_version(1), ACCOUNTS_MAPPING),
        (names.transactions, names.transactions_version(1), TRANSACTIONS_MAPPING),
    ):
        es_client.indices.create(
            index=index,
            mappings=mapping,
            settings=index_settings(),
            aliases={alias: {"is_write_index": True}},
        )
    assert alias_targets(es_client, names.pending) == []
    assert ensure_indices(es_client, names) == 1
    assert alias_targets(es_client, names.pending) == [names.pending_version(1)]
    # Again: nothing more to do.
    assert ensure_indices(es_client, names) == 1
    assert alias_targets(es_client, names.accounts) == [names.accounts_version(1)]
