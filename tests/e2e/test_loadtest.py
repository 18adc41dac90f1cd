"""``python -m chronos.loadtest`` at tiny scale against the four real service processes.

The services get a fresh database, events topic, consumer group and index prefix, all
removed afterwards. Each run must exit 0, write result.json and latency.png, and report
that every invariant held. Timings are printed by the load test, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from tests.e2e.helpers import PROJECT_ROOT, free_port, service_process
from tests.integration.conftest import create_database, drop_database

LOADTEST_TIMEOUT_SECONDS = 240


@dataclass(frozen=True)
class Services:
    command_addr: str
    query_addr: str
    pg_dsn: str
    es_url: str
    index_prefix: str


@pytest.fixture(scope="module")
def services(
    pg_dsn: str, kafka_bootstrap: str, es_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    name, dsn = create_database(pg_dsn)
    tag = uuid.uuid4().hex[:12]
    topic = f"chronos-loadtest-e2e-{tag}"
    prefix = f"lt-e2e-{tag}"
    logs = tmp_path_factory.mktemp("loadtest-services")
    command_addr = f"127.0.0.1:{free_port()}"
    query_addr = f"127.0.0.1:{free_port()}"
    env = {
        "CHRONOS_PG_DSN": dsn,
        "CHRONOS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_EVENTS_TOPIC": topic,
        "CHRONOS_INDEX_PREFIX": prefix,
        "CHRONOS_PROJECTOR_GROUP": f"chronos-loadtest-e2e-{tag}",
        "CHRONOS_COMMAND_ADDR": command_addr,
        "CHRONOS_QUERY_ADDR": query_addr,
        "CHRONOS_COMMAND_METRICS_PORT": "0",
        "CHRONOS_POLLER_METRICS_PORT": "0",
        "CHRONOS_PROJECTOR_METRICS_PORT": "0",
        "CHRONOS_QUERY_METRICS_PORT": "0",
    }
    try:
        with ExitStack() as stack:
            stack.enter_context(
                service_process(
                    "command_server",
                    env,
                    log_path=logs / "command_server.log",
                    grpc_address=command_addr,
                )
            )
            stack.enter_context(
                service_process("outbox_poller", env, log_path=logs / "outbox_poller.log")
            )
            stack.enter_context(service_process("projector", env, log_path=logs / "projector.log"))
            stack.enter_context(
                service_process(
                    "query_server", env, log_path=logs / "query_server.log", grpc_address=query_addr
                )
            )
            yield Services(
                command_addr=command_addr,
                query_addr=query_addr,
                pg_dsn=dsn,
                es_url=es_url,
                index_prefix=prefix,
            )
    finally:
        drop_database(pg_dsn, name)
        es = Elasticsearch(es_url, request_timeout=30)
        try:
            es.options(ignore_status=404).indices.delete(
                index=f"{prefix}-*", expand_wildcards="all"
            )
        finally:
            es.close()
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        futures = admin.delete_topics([topic], operation_timeout=30)
        # The topic only exists once the poller created it; a failure here leaves nothing.
        with contextlib.suppress(Exception):
            futures[topic].result(timeout=30)


def run_loadtest(services: Services, output_dir: Path, *arguments: str) -> tuple[int, str]:
    command = [
        sys.executable,
        "-m",
        "chronos.loadtest",
        *arguments,
        "--command-addr",
        services.command_addr,
        "--query-addr",
        services.query_addr,
        "--pg-dsn",
        services.pg_dsn,
        "--es-url",
        services.es_url,
        "--index-prefix",
        services.index_prefix,
        "--output-dir",
        str(output_dir),
        "--rpc-timeout-seconds",
        "20",
        "--catch-up-wait-seconds-max",
        "90",
    ]
    completed = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=LOADTEST_TIMEOUT_SECONDS,
    )
    output = f"{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    return completed.returncode, output


@pytest.mark.parametrize(
    ("scenario", "arguments", "rpcs"),
    [
        pytest.param(
            "transfers",
            ["--count", "150", "--rate", "100", "--processes", "2", "--distribution", "hot"],
            {"TransferFunds"},
            id="transfers-open-loop-2-processes",
        ),
        pytest.param(
            "mixed",
            ["--count", "150", "--read-fraction", "0.5"],
            {"TransferFunds", "GetAccount", "ListTransactions"},
            id="mixed-closed-loop",
        ),
        pytest.param(
            "duplicates",
            ["--count", "150", "--duplicate-fraction", "0.5"],
            {"TransferFunds", "TransferFunds (retry)"},
            id="duplicates",
        ),
    ],
)
def test_loadtest_runs_and_every_invariant_holds(
    services: Services, tmp_path: Path, scenario: str, arguments: list[str], rpcs: set[str]
) -> None:
    output_dir = tmp_path / "result"
    status, output = run_loadtest(
        services,
        output_dir,
        scenario,
        "--accounts",
        "20",
        "--concurrency",
        "4",
        "--lag-sample-fraction",
        "0.2",
        "--seed",
        "5",
        *arguments,
    )
    assert status == 0, output
    assert "invariants: all checks passed" in output

    result = json.loads((output_dir / "result.json").read_text())
    assert result["scenario"] == scenario
    for key in (
        "throughput_per_second",
        "latency_ms",
        "errors",
        "requests",
        "projection_lag_ms",
        "invariants",
        "phases",
    ):
        assert key in result, key
    assert result["operations"] == 150
    assert result["throughput_per_second"] > 0
    assert set(result["latency_ms"]) == rpcs
    for rpc in rpcs:
        summary = result["latency_ms"][rpc]
        assert summary["count"] > 0
        assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert result["requests"]["accepted"] > 0
    assert result["projection_lag_ms"]["count"] > 0
    assert [phase["phase"] for phase in result["phases"]] == ["setup", scenario]
    assert result["phases"][0]["requests"]["accepted"] == 40  # 20 opened, 20 funded

    checks = result["invariants"]["checks"]
    assert [check["name"] for check in checks] == [
        "currency conserved",
        "no balance below its limit",
        "every accepted request exactly once",
        "projection equals recompute",
    ]
    assert all(check["passed"] for check in checks), checks
    assert result["invariants"]["passed"] is True
    if scenario == "duplicates":
        assert result["requests"]["replayed_answers"] > 0
        assert result["requests"]["replay_mismatches"] == 0

    plot = output_dir / "latency.png"
    assert plot.is_file()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
