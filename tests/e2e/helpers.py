"""Running real Chronos service processes for end-to-end tests, with the one launcher
(:mod:`chronos_dev.launcher`): the same start, readiness wait and stop as the bench."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient
from google.rpc import error_details_pb2, status_pb2

from chronos.kafka_client import kafka_client_config
from chronos.read_model.client import elasticsearch_client
from chronos_dev import launcher
from chronos_dev.launcher import PROJECT_ROOT as PROJECT_ROOT
from chronos_dev.launcher import Backends, PortAllocator
from tests.integration.conftest import create_database, drop_database

# Every port handed out in this test session comes from one allocator, so no two
# services are ever given the same port.
_PORTS = PortAllocator()
WAIT_SERVING_SECONDS = 60.0


def free_port() -> int:
    """A free port of 127.0.0.1 not handed out before in this session."""
    return _PORTS.take()


def _spawn(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    # Metrics endpoints are off unless a test asks for one: the documented default
    # ports may be taken by a running `scripts/run`.
    quiet_metrics = {variable: "0" for variable in launcher.METRICS_PORT_VARIABLES.values()}
    return launcher.spawn(module, launcher.service_environment({**quiet_metrics, **env}), log_path)


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
        launcher.stop(process)


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
            launcher.stop(self.process)


def wait_serving(
    address: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout_seconds: float = WAIT_SERVING_SECONDS,
) -> None:
    """Waits until the service at ``address`` serves; raises ``LaunchError`` otherwise."""
    deadline = time.monotonic() + timeout_seconds
    launcher.wait_serving(log_path.stem, address, process, log_path, deadline=deadline)


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
    backends = Backends(
        pg_dsn=dsn,
        kafka_bootstrap=kafka_bootstrap,
        es_url=es_url,
        events_topic=topic,
        index_prefix=prefix,
        projector_group=f"chronos-{name}-{tag}",
    )
    env = {
        **backends.environment(),
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
        es = elasticsearch_client(es_url, request_timeout=30)
        try:
            es.options(ignore_status=404).indices.delete(
                index=f"{prefix}-*", expand_wildcards="all"
            )
        finally:
            es.close()
        admin = AdminClient(kafka_client_config(kafka_bootstrap))
        futures = admin.delete_topics([topic], operation_timeout=30)
        # The topic only exists once the poller created it; a failure here leaves nothing.
        with contextlib.suppress(Exception):
            futures[topic].result(timeout=30)


def run_loadtest(
    pipeline: PipelineEnv, output_dir: Path, *arguments: str, timeout_seconds: float = 240
) -> tuple[int, str]:
    """Runs ``python -m chronos_dev.loadtest`` against the pipeline; (exit status, output)."""
    command = [
        sys.executable,
        "-m",
        "chronos_dev.loadtest",
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
        env=launcher.service_environment({}),
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
