"""The four Chronos services, started by the bench on free ports and stopped at its end.

Each service runs as ``python -m <service>`` with this interpreter, its output in
``<output>/logs/<service>.log``, its metrics on a free port of 127.0.0.1 (the command
server's worker i on ``base + i``, so the base is chosen with ``processes`` free ports
after it). Tracing exporters are switched off: exporting spans costs CPU that is no part
of the path being measured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.bench.memory import children_of, environment_of
from chronos.bench.resources import BenchError, BenchResources, Infrastructure
from chronos.infra.stack import free_port
from chronos.top import scrape

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_WAIT_SECONDS_MAX = 120.0
STOP_WAIT_SECONDS_MAX = 30.0
KILL_WAIT_SECONDS_MAX = 10.0
_POLL_INTERVAL_SECONDS = 0.1
# Environment variables removed from the services' environment (see the docstring).
_TRACING_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "CHRONOS_TRACE_FILE")


@dataclass(slots=True)
class ServiceSet:
    """The running services: addresses, metrics endpoints and processes."""

    command_addr: str
    query_addr: str
    # Metrics endpoints (host:port) of the command server: one, which adds up its
    # workers' metrics however many there are.
    command_metrics: list[str]
    poller_metrics: str
    projector_metrics: str
    query_metrics: list[str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # "command_server worker <i>" -> pid (the worker itself when there is one process).
    command_worker_pids: dict[str, int] = field(default_factory=dict)
    query_worker_pids: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def read_side_paused(self) -> Iterator[None]:
        """Freezes the outbox poller and the projector (SIGSTOP) and thaws them on exit
        (SIGCONT), so a stage measures the write path alone, as pgbench does; commits
        wait in the outbox meanwhile. A pause shorter than the Kafka consumer's session
        timeout (45 s) keeps the projector in its group."""
        pids = [self.processes[module].pid for module in ("outbox_poller", "projector")]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)


class Services:
    """Context manager that starts the four services and stops them on exit."""

    def __init__(
        self,
        infrastructure: Infrastructure,
        resources: BenchResources,
        *,
        command_processes: int,
        query_processes: int = 1,
        log_dir: Path,
    ) -> None:
        self._infrastructure = infrastructure
        self._resources = resources
        self._command_processes = command_processes
        self._query_processes = query_processes
        self._log_dir = log_dir
        self._stack = ExitStack()
        # Six different ports: the kernel may pick the same free port twice in a row.
        taken: set[int] = set()

        def port() -> int:
            chosen = free_port(avoid=taken)
            taken.add(chosen)
            return chosen

        command_metrics_port = port()
        query_metrics_port = port()
        self.services = ServiceSet(
            command_addr=f"127.0.0.1:{port()}",
            query_addr=f"127.0.0.1:{port()}",
            command_metrics=[f"127.0.0.1:{command_metrics_port}"],
            poller_metrics=f"127.0.0.1:{port()}",
            projector_metrics=f"127.0.0.1:{port()}",
            query_metrics=[f"127.0.0.1:{query_metrics_port}"],
        )
        self._command_metrics_port = command_metrics_port
        self._query_metrics_port = query_metrics_port

    def _environment(self) -> dict[str, str]:
        services = self.services
        env = {k: v for k, v in os.environ.items() if k not in _TRACING_VARIABLES}
        python_path = [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH", "")])]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(python_path),
                "CHRONOS_PG_DSN": self._resources.pg_dsn,
                "CHRONOS_KAFKA_BOOTSTRAP": self._infrastructure.kafka_bootstrap,
                "CHRONOS_ES_URL": self._infrastructure.es_url,
                "CHRONOS_EVENTS_TOPIC": self._resources.topic,
                "CHRONOS_INDEX_PREFIX": self._resources.index_prefix,
                "CHRONOS_PROJECTOR_GROUP": self._resources.consumer_group,
                "CHRONOS_COMMAND_ADDR": services.command_addr,
                "CHRONOS_QUERY_ADDR": services.query_addr,
                "CHRONOS_COMMAND_PROCESSES": str(self._command_processes),
                "CHRONOS_COMMAND_METRICS_PORT": str(self._command_metrics_port),
                "CHRONOS_POLLER_METRICS_PORT": services.poller_metrics.rsplit(":", 1)[1],
                "CHRONOS_PROJECTOR_METRICS_PORT": services.projector_metrics.rsplit(":", 1)[1],
                "CHRONOS_QUERY_PROCESSES": str(self._query_processes),
                "CHRONOS_QUERY_METRICS_PORT": str(self._query_metrics_port),
            }
        )
        return env

    def __enter__(self) -> ServiceSet:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = self._environment()
        try:
            for module in ("command_server", "outbox_poller", "projector", "query_server"):
                self.services.processes[module] = self._start(module, env)
            deadline = time.monotonic() + START_WAIT_SECONDS_MAX
            self._wait_serving("command_server", self.services.command_addr, deadline)
            self._wait_serving("query_server", self.services.query_addr, deadline)
            for module, endpoints in (
                ("command_server", self.services.command_metrics),
                ("outbox_poller", [self.services.poller_metrics]),
                ("projector", [self.services.projector_metrics]),
                ("query_server", self.services.query_metrics),
            ):
                for endpoint in endpoints:
                    self._wait_metrics(module, endpoint, deadline)
            self.services.command_worker_pids = self._workers(
                "command_server", "COMMAND", self._command_processes, deadline
            )
            self.services.query_worker_pids = self._workers(
                "query_server", "QUERY", self._query_processes, deadline
            )
        except BaseException:
            self._stack.close()
            raise
        return self.services

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def log_path(self, module: str) -> Path:
        return self._log_dir / f"{module}.log"

    def _start(self, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log_path(module).open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        self._stack.callback(_stop, process)
        return process

    def _check_alive(self, module: str) -> None:
        process = self.services.processes[module]
        if process.poll() is not None:
            tail = self.log_path(module).read_text(errors="replace")[-3000:]
            raise BenchError(f"{module} exited with status {process.returncode}:\n{tail}")

    def _wait_serving(self, module: str, address: str, deadline: float) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._check_alive(module)
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(_POLL_INTERVAL_SECONDS)
        raise BenchError(f"{module} at {address} not serving within {START_WAIT_SECONDS_MAX} s")

    def _wait_metrics(self, module: str, endpoint: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive(module)
            if scrape(endpoint) is not None:
                return
            time.sleep(_POLL_INTERVAL_SECONDS)
        raise BenchError(f"{module} metrics at {endpoint} not answering in time")

    def _workers(self, module: str, prefix: str, processes: int, deadline: float) -> dict[str, int]:
        """The pid of each worker of ``module``, by index (the supervisor's children)."""
        supervisor = self.services.processes[module]
        if processes == 1:
            return {f"{module} worker 0": supervisor.pid}
        variable = f"CHRONOS_{prefix}_WORKER_INDEX"
        while time.monotonic() < deadline:
            workers: dict[str, int] = {}
            for pid in children_of(supervisor.pid):
                index = environment_of(pid).get(variable)
                if index is not None:
                    workers[f"{module} worker {index}"] = pid
            if len(workers) == processes:
                return dict(sorted(workers.items()))
            time.sleep(_POLL_INTERVAL_SECONDS)
        raise BenchError(f"the {module} workers could not be found")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait for a clean exit, then SIGKILL (children first).

    The command server's supervisor passes SIGTERM on to its workers; if it has to be
    killed, its workers are killed first, while they are still recognisably its
    children, so none is left behind.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_WAIT_SECONDS_MAX)
    except subprocess.TimeoutExpired:
        for child in children_of(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.kill()
        process.wait(timeout=KILL_WAIT_SECONDS_MAX)
