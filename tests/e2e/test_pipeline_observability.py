"""The whole pipeline as real processes: command server → PostgreSQL → outbox poller →
Kafka → projector → Elasticsearch → query server, with tracing to files and metrics.

Asserts read-your-writes through the query service, the five-stage trace of one
transfer, and that every process's /metrics moved.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev.client import channel as open_channel
from tests.e2e.helpers import free_port, service_process
from tests.integration.readside_support import fresh_database, index_prefix, unique

SERVICES = ("command", "query", "poller", "projector")


@dataclass
class Pipeline:
    commands: Any
    queries: Any
    metrics_ports: dict[str, int]
    trace_dir: Path


@pytest.fixture(scope="module")
def pipeline(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    trace_dir = tmp_path_factory.mktemp("traces")
    logs = tmp_path_factory.mktemp("logs")
    ports = {name: free_port() for name in SERVICES}
    command_address = f"127.0.0.1:{free_port()}"
    query_address = f"127.0.0.1:{free_port()}"
    with fresh_database(pg_dsn) as dsn, index_prefix(es_client) as names, ExitStack() as stack:
        common = {
            "CHRONOS_PG_DSN": dsn,
            "CHRONOS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CHRONOS_ES_URL": es_url,
            "CHRONOS_EVENTS_TOPIC": unique("pipeline-events"),
            "CHRONOS_INDEX_PREFIX": names.prefix,
            "CHRONOS_PROJECTOR_GROUP": unique("pipeline-projector"),
            "CHRONOS_COMMAND_ADDR": command_address,
            "CHRONOS_QUERY_ADDR": query_address,
            "CHRONOS_COMMAND_METRICS_PORT": str(ports["command"]),
            "CHRONOS_QUERY_METRICS_PORT": str(ports["query"]),
            "CHRONOS_POLLER_METRICS_PORT": str(ports["poller"]),
            "CHRONOS_PROJECTOR_METRICS_PORT": str(ports["projector"]),
        }
        for module, address in (
            ("command_server", command_address),
            ("outbox_poller", None),
            ("projector", None),
            ("query_server", query_address),
        ):
            env = {**common, "CHRONOS_TRACE_FILE": str(trace_dir / f"{module}.jsonl")}
            stack.enter_context(
                service_process(module, env, log_path=logs / f"{module}.log", grpc_address=address)
            )
        # The query server serves before the projector has created the read model's
        # indices (it answers UNAVAILABLE until then); on a loaded machine the first
        # query can come first, so wait (bounded) for the projector's indices.
        deadline = time.monotonic() + 60
        while not es_client.indices.exists(index=names.projection):
            assert time.monotonic() < deadline, "the projector did not create its indices"
            time.sleep(0.1)
        command_channel = stack.enter_context(open_channel(command_address))
        query_channel = stack.enter_context(open_channel(query_address))
        yield Pipeline(
            commands_pb2_grpc.CommandServiceStub(command_channel),
            queries_pb2_grpc.QueryServiceStub(query_channel),
            ports,
            trace_dir,
        )


def eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def open_funded(pipeline: Pipeline, name: str, funds_minor: int) -> str:
    opened = pipeline.commands.OpenAccount(
        commands_pb2.OpenAccountRequest(
            request_id=str(uuid.uuid4()), owner_name=name, currency="EUR"
        ),
        timeout=10,
    )
    if funds_minor:
        pipeline.commands.Deposit(
            commands_pb2.DepositRequest(
                request_id=str(uuid.uuid4()), account_id=opened.account_id, amount=eur(funds_minor)
            ),
            timeout=10,
        )
    return str(opened.account_id)


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def read_spans(trace_dir: Path) -> list[dict[str, Any]]:
    spans = []
    for path in trace_dir.glob("*.jsonl"):
        spans.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return spans


def test_transfer_is_readable_through_the_query_service_with_min_position(
    pipeline: Pipeline,
) -> None:
    ada = open_funded(pipeline, "Ada Lovelace", 1_000)
    bob = open_funded(pipeline, "Bob Babbage", 0)
    before_transfer = time.time()
    transfer = pipeline.commands.TransferFunds(
        commands_pb2.TransferFundsRequest(
            request_id=str(uuid.uuid4()),
            from_account_id=ada,
            to_account_id=bob,
            amount=eur(250),
            description="rent",
        ),
        timeout=10,
    )
    account = pipeline.queries.GetAccount(
        queries_pb2.GetAccountRequest(account_id=bob, min_position=transfer.position), timeout=30
    )
    assert account.balance.minor_units == 250
    assert account.as_of_position >= transfer.position
    lines = pipeline.queries.ListTransactions(
        queries_pb2.ListTransactionsRequest(account_id=ada, min_position=transfer.position),
        timeout=30,
    ).lines
    assert lines[0].entry_id == transfer.entry_id
    assert lines[0].balance_after.minor_units == 750
    assert lines[0].counterparty_account_id == bob
    past = queries_pb2.GetBalanceAtRequest(account_id=ada)
    past.at_time.FromSeconds(int(before_transfer) - 1)
    assert pipeline.queries.GetBalanceAt(past, timeout=30).balance.minor_units in (0, 1_000)
    found = pipeline.queries.SearchAccounts(
        queries_pb2.SearchAccountsRequest(query="lovelace"), timeout=30
    )
    assert ada in {summary.account_id for summary in found.accounts}


def test_one_trace_spans_grpc_postgres_publish_consume_and_bulk(pipeline: Pipeline) -> None:
    ada = open_funded(pipeline, "Trace Source", 500)
    bob = open_funded(pipeline, "Trace Target", 0)
    transfer = pipeline.commands.TransferFunds(
        commands_pb2.TransferFundsRequest(
            request_id=str(uuid.uuid4()), from_account_id=ada, to_account_id=bob, amount=eur(5)
        ),
        timeout=10,
    )
    pipeline.queries.GetAccount(
        queries_pb2.GetAccountRequest(account_id=bob, min_position=transfer.position), timeout=30
    )
    chain_names = [
        "/chronos.v1.CommandService/TransferFunds",
        "postgres.transaction",
        "outbox.publish",
        "kafka.consume",
        "elasticsearch.bulk",
    ]
    deadline = time.monotonic() + 30
    chain: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        chain = _find_chain(read_spans(pipeline.trace_dir), chain_names)
        if len(chain) == len(chain_names):
            break
        time.sleep(0.2)
    assert [span["name"] for span in chain] == chain_names
    assert len({span["trace_id"] for span in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child["parent_span_id"] == parent["span_id"], (parent["name"], child["name"])
    assert [span["service"] for span in chain] == [
        "command-server",
        "command-server",
        "outbox-poller",
        "projector",
        "projector",
    ]
    for span in chain:
        assert span["end_ns"] >= span["start_ns"]


def _find_chain(spans: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The longest parent→child chain following ``names`` among the TransferFunds roots."""
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["parent_span_id"]:
            children.setdefault(span["parent_span_id"], []).append(span)
    best: list[dict[str, Any]] = []
    for root in (span for span in spans if span["name"] == names[0]):
        chain = [root]
        while len(chain) < len(names):
            following = [
                span
                for span in children.get(chain[-1]["span_id"], [])
                if span["name"] == names[len(chain)]
            ]
            if not following:
                break
            chain.append(following[0])
        if len(chain) > len(best):
            best = chain
    return best


def test_every_process_metrics_moved(pipeline: Pipeline) -> None:
    ada = open_funded(pipeline, "Metrics Source", 500)
    bob = open_funded(pipeline, "Metrics Target", 0)
    for _ in range(3):
        transfer = pipeline.commands.TransferFunds(
            commands_pb2.TransferFundsRequest(
                request_id=str(uuid.uuid4()), from_account_id=ada, to_account_id=bob, amount=eur(1)
            ),
            timeout=10,
        )
    pipeline.queries.GetAccount(
        queries_pb2.GetAccountRequest(account_id=bob, min_position=transfer.position), timeout=30
    )
    time.sleep(1.5)  # the backlog and consumer-lag gauges refresh once a second
    command = scrape(pipeline.metrics_ports["command"])
    query = scrape(pipeline.metrics_ports["query"])
    poller = scrape(pipeline.metrics_ports["poller"])
    projector = scrape(pipeline.metrics_ports["projector"])

    transfers_ok = 'chronos_grpc_requests_total{code="OK",method="TransferFunds",service="command"}'
    assert command[transfers_ok] >= 3
    assert query['chronos_grpc_requests_total{code="OK",method="GetAccount",service="query"}'] >= 1
    assert poller["chronos_outbox_published_total"] >= 6
    assert poller["chronos_outbox_publish_latency_seconds_count"] >= 6
    assert poller["chronos_outbox_leader"] == 1
    assert poller["chronos_outbox_backlog_rows"] >= 0
    assert projector["chronos_projected_events_total"] >= 6
    assert projector["chronos_projection_lag_seconds_count"] >= 6
    assert projector["chronos_projection_watermark_position"] >= transfer.position
    lag_gauges = [name for name in projector if name.startswith("chronos_kafka_consumer_lag")]
    assert lag_gauges, "consumer lag per partition is reported"
