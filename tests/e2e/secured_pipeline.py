"""The four pipeline processes (command server, outbox poller, projector, query server)
served with TLS and authentication on, over a fresh database, topic and indices."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import grpc
import pytest
from elasticsearch import Elasticsearch

from chronos.read_model.indices import IndexNames, ensure_indices
from chronos.v1 import commands_pb2_grpc, queries_pb2_grpc
from chronos_dev.pki import ensure_local_pki
from tests.e2e.helpers import free_port, service_process
from tests.e2e.secure_servers import credentials, secure_env, secure_server
from tests.integration.authorization_support import Tokens
from tests.integration.readside_support import fresh_database, index_prefix, unique


@dataclass(frozen=True)
class SecuredPipeline:
    commands: commands_pb2_grpc.CommandServiceStub
    queries: queries_pb2_grpc.QueryServiceStub
    tokens: Tokens
    dsn: str
    names: IndexNames


@contextmanager
def secured_pipeline(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
) -> Iterator[SecuredPipeline]:
    """Starts the processes (their logs under a temporary folder); stops them and
    removes the database and indices afterwards."""
    pki = ensure_local_pki(tmp_path_factory.mktemp("pki"))
    logs = tmp_path_factory.mktemp("logs")
    creds = credentials(pki.ca_cert)
    command_address = f"127.0.0.1:{free_port()}"
    query_address = f"127.0.0.1:{free_port()}"
    with fresh_database(pg_dsn) as dsn, index_prefix(es_client) as names, ExitStack() as stack:
        # Created now, not by the projector when it gets to it: a read before that would
        # be UNAVAILABLE / READ_MODEL_UNAVAILABLE, not an answer about the request.
        ensure_indices(es_client, names)
        env = secure_env(pki) | {
            "CHRONOS_PG_DSN": dsn,
            "CHRONOS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CHRONOS_ES_URL": es_url,
            "CHRONOS_EVENTS_TOPIC": unique(f"{name}-events"),
            "CHRONOS_INDEX_PREFIX": names.prefix,
            "CHRONOS_PROJECTOR_GROUP": unique(f"{name}-projector"),
            "CHRONOS_COMMAND_ADDR": command_address,
            "CHRONOS_QUERY_ADDR": query_address,
        }
        stack.enter_context(
            secure_server("command_server", env, logs / "command.log", command_address, creds)
        )
        for module in ("outbox_poller", "projector"):
            stack.enter_context(service_process(module, env, log_path=logs / f"{module}.log"))
        stack.enter_context(
            secure_server("query_server", env, logs / "query.log", query_address, creds)
        )
        command_channel = stack.enter_context(grpc.secure_channel(command_address, creds))
        query_channel = stack.enter_context(grpc.secure_channel(query_address, creds))
        yield SecuredPipeline(
            commands_pb2_grpc.CommandServiceStub(command_channel),
            queries_pb2_grpc.QueryServiceStub(query_channel),
            Tokens(pki),
            dsn,
            names,
        )
