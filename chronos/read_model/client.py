"""The Elasticsearch clients of every process, built in one place.

JSON goes through orjson instead of the standard library's ``json``: profiles of the
projector under load showed ``json.loads`` of bulk answers and ``json.dumps`` of bulk
bodies as a large share of its CPU, and with orjson its CPU per bulk fell markedly (the
query server's small ``mget`` answers gain less: the HTTP client is most of their
cost). orjson is a compiled, widely used implementation with the same output for the
types the read model sends (str, int, bool, None, lists and dicts; timestamps are
formatted by ``chronos.read_model.documents`` before they get here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer


class _Orjson:
    """orjson in place of the standard library's json; first among the bases, so that
    these two methods win over the client's serializers' own."""

    # The client's fallback for what orjson cannot encode (from the serializer bases).
    default: Callable[[Any], Any]

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class _OrjsonJson(_Orjson, JsonSerializer):
    """Request and answer bodies."""


class _OrjsonNdjson(_Orjson, NdjsonSerializer):
    """Bulk bodies: one orjson-encoded line per operation."""


def _serializers() -> dict[str, Any]:
    # The client maps its compatibility media types (application/vnd.elasticsearch+json,
    # what 8.x servers answer with) to these two as well.
    return {
        JsonSerializer.mimetype: _OrjsonJson(),
        NdjsonSerializer.mimetype: _OrjsonNdjson(),
    }


def elasticsearch_client(url: str, **options: Any) -> Elasticsearch:
    """A blocking client for ``url``; ``options`` go to ``Elasticsearch``."""
    return Elasticsearch(url, serializers=_serializers(), **options)


def async_elasticsearch_client(url: str, **options: Any) -> AsyncElasticsearch:
    """An asyncio client for ``url``; ``options`` go to ``AsyncElasticsearch``."""
    return AsyncElasticsearch(url, serializers=_serializers(), **options)
