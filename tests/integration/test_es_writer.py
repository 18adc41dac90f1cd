"""The read model's writer against a real Elasticsearch: what a refused item reports."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from chronos.read_model import ReadModelError
from chronos.read_model.es_writer import EsWriter
from chronos.read_model.indices import ensure_indices
from tests.integration.readside_support import index_prefix


def test_a_refused_bulk_item_is_named_by_its_index_and_id(es_client: Elasticsearch) -> None:
    # The bulk answer is filtered down to statuses and errors, so the writer names a
    # refused item from its own request: this checks it names the right one.
    with index_prefix(es_client) as names:
        ensure_indices(es_client, names)
        writer = EsWriter(es_client, names)
        accepted, refused = str(uuid.uuid4()), str(uuid.uuid4())
        lines = [
            (accepted, {"event_id": accepted, "amount_minor": 5}),
            # The mapping says long: Elasticsearch refuses this one item (400).
            (refused, {"event_id": refused, "amount_minor": "five"}),
        ]
        with pytest.raises(ReadModelError) as raised:
            writer.write_documents([], lines, refresh=True)
        message = str(raised.value)
        assert "1 items failed" in message
        assert f"{names.transactions}/{refused}:" in message
        assert accepted not in message
        stored = es_client.get(index=names.transactions, id=accepted)
        assert stored["_source"]["amount_minor"] == 5
