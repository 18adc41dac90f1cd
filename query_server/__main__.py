"""Composition root of the query server: ``python -m query_server``."""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc

from chronos import telemetry
from chronos.process import run_grpc_server
from chronos.read_model.client import (
    ElasticsearchSecurity,
    async_elasticsearch_client,
    check_elasticsearch_login,
)
from chronos.read_model.queries import ReadModelQueries
from chronos.read_model.watermark import APPLIED, SEARCHABLE, AsyncWatermarkReader
from chronos.read_model.watermark_cache import WatermarkCache
from chronos.rpc import InFlightLimit, add_servicer, serve
from chronos.security.authentication import build_authenticator
from chronos.v1 import queries_pb2
from query_server.config import QueryServerConfig
from query_server.servicer import QueryServicer

_logger = logging.getLogger("query_server")


async def run(config: QueryServerConfig) -> None:
    # Refused credentials stop the start. Otherwise nothing connects here: the client
    # opens connections on the first call, so the server starts (and reports
    # UNAVAILABLE per call) even while Elasticsearch is down.
    security = config.es_security or ElasticsearchSecurity.from_env()
    await asyncio.to_thread(check_elasticsearch_login, config.es_url, security)
    es = async_elasticsearch_client(
        config.es_url,
        security,
        request_timeout=config.es_request_timeout_seconds,
        max_retries=1,
        retry_on_timeout=False,
    )
    names = config.index_names
    searchable, applied = (
        WatermarkCache(
            AsyncWatermarkReader(es, names, kind),
            refresh_seconds=config.watermark_refresh_seconds,
            report_max_age_seconds=config.watermark_report_max_age_seconds,
        )
        for kind in (SEARCHABLE, APPLIED)
    )
    read_model = ReadModelQueries(
        es, names, piggybacked=applied, linger_seconds=config.read_linger_seconds
    )
    servicer = QueryServicer(
        read_model,
        searchable,
        min_position_wait_seconds_max=config.min_position_wait_seconds_max,
        applied_watermark=applied,
    )

    authenticator = build_authenticator("query", config.security)

    def register(server: grpc.aio.Server) -> list[str]:
        service = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]
        limit = InFlightLimit(config.in_flight_max, "calls")
        return [add_servicer(server, servicer, service, limit, authenticator)]

    async def on_stop() -> None:
        await read_model.close()
        await es.close()

    await serve(
        name="query server",
        address=config.address,
        register=register,
        security=config.security,
        authenticator=authenticator,
        interceptors=telemetry.server_interceptors("query"),
        on_stop=on_stop,
        shutdown_grace_seconds=config.shutdown_grace_seconds,
        reuse_port=config.reuse_port,
    )


def main() -> int:
    return run_grpc_server(
        service="query-server",
        module="query_server",
        prefix="QUERY",
        load_config=QueryServerConfig.from_env,
        serve=run,
    )


if __name__ == "__main__":
    sys.exit(main())
