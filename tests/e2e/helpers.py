"""Running real Chronos service processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.infra.stack import free_port as infra_free_port
from tests.integration.conftest import create_database, drop_database

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_METRICS_NAMES = ("COMMAND", "QUERY", "POLLER", "PROJECTOR")


# Ports handed out in this test session. The kernel may pick the same free port twice
# in a row, and two services given one port fail (it happened in CI: the query
# server's and the projector's metrics port).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    port = infra_free_port(avoid=_HANDED_OUT)
    _HANDED_OUT.add(port)
    return port


def _spawn(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    # Metrics endpoints are off unless a test asks for one: the documented default
    # ports may be taken by a running `scripts/run`.
    quiet_metrics = {f"CHRONOS_{name}_METRICS_PORT": "0" for name in _METRICS_NAMES}
    full_env = {**os.environ, **quiet_metrics, **env, "PYTHONPATH": str(PROJECT_ROOT)}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def service_process(
    module: str, env: dict[str, str], *, log_path: Path, grpc_address: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Starts ``python -m module``; waits until its gRPC health check says SERVING.

    On exit sends SIGTERM and waits (bounded) for a clean exit.
    """
    process = _spawn(module, env, log_path)
    try:
        if grpc_address is not None:
            wait_serving(grpc_address, process, log_path)
        yield process
    finally:
        _terminate(process)


class RestartableService:
    """A service process that a test can kill without warning and start again."""

    def __init__(
        self, module: str, env: dict[str, str], log_path: Path, grpc_address: str | None = None
    ) -> None:
        self.module = module
        self._env = env
        self._log_path = log_path
        self._grpc_address = grpc_address
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "still running"
        self.process = _spawn(self.module, self._env, self._log_path)
        self.starts += 1
        if self._grpc_address is not None:
            wait_serving(self._grpc_address, self.process, self._log_path)

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no commit; as a crash or an OOM kill."""
        assert self.process is not None and self.process.poll() is None, "not running"
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)


def wait_serving(
    address: str, process: subprocess.Popen[bytes], log_path: Path, timeout_seconds: float = 60
) -> None:
    deadline = time.monotonic() + timeout_seconds
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(
                    f"service exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"service at {address} not serving:\n{log_path.read_text()[-3000:]}")


@dataclass(frozen=True)
class PipelineEnv:
    """A fresh database, events topic, consumer group and index prefix for one set of
    service processes, and the environment that points the services at them."""

    env: dict[str, str]
    command_addr: str
    query_addr: str
    pg_dsn: str
    es_url: str
    index_prefix: str


@contextmanager
def pipeline_env(
    pg_dsn: str, kafka_bootstrap: str, es_url: str, name: str
) -> Iterator[PipelineEnv]:
    """Creates the resources (see :class:`PipelineEnv`); removes them all afterwards."""
    database, dsn = create_database(pg_dsn)
    tag = uuid.uuid4().hex[:12]
    topic = f"chronos-{name}-{tag}"
    prefix = f"{name}-{tag}"
    command_addr = f"127.0.0.1:{free_port()}"
    query_addr = f"127.0.0.1:{free_port()}"
    env = {
        "CHRONOS_PG_DSN": dsn,
        "CHRONOS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CHRONOS_ES_URL": es_url,
        "CHRONOS_EVENTS_TOPIC": topic,
        "CHRONOS_INDEX_PREFIX": prefix,
        "CHRONOS_PROJECTOR_GROUP": f"chronos-{name}-{tag}",
        "CHRONOS_COMMAND_ADDR": command_addr,
        "CHRONOS_QUERY_ADDR": query_addr,
    }
    try:
        yield PipelineEnv(
            env=env,
            command_addr=command_addr,
            query_addr=query_addr,
            pg_dsn=dsn,
            es_url=es_url,
            index_prefix=prefix,
        )
    finally:
        drop_database(pg_dsn, database)
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


def run_loadtest(
    pipeline: PipelineEnv, output_dir: Path, *arguments: str, timeout_seconds: float = 240
) -> tuple[int, str]:
    """Runs ``python -m chronos.loadtest`` against the pipeline; (exit status, output)."""
    command = [
        sys.executable,
        "-m",
        "chronos.loadtest",
        *arguments,
        "--command-addr",
        pipeline.command_addr,
        "--query-addr",
        pipeline.query_addr,
        "--pg-dsn",
        pipeline.pg_dsn,
        "--es-url",
        pipeline.es_url,
        "--index-prefix",
        pipeline.index_prefix,
        "--output-dir",
        str(output_dir),
        "--catch-up-wait-seconds-max",
        "90",
    ]
    completed = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
    )
    output = f"{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    return completed.returncode, output


def details_of(status: status_pb2.Status) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest field paths of a rich status."""
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
            assert info.domain == "chronos.ledger"
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields
