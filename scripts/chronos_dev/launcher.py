"""The one launcher of the four Chronos services, for the bench, the e2e tests and
``scripts/run``.

Each service runs as ``python -m <service>`` with this interpreter, the repository first
on ``PYTHONPATH``, its output appended to a log file of its own, in a process group of
its own: only the launcher signals it (a Ctrl-C in the terminal reaches the launcher,
which then stops the services in order). Readiness is the gRPC health check of the two
servers (over TLS when the environment names a CA; the health service needs no token)
and, when asked, an answer from every metrics endpoint. Stopping is SIGTERM, a bounded
wait for the service's own drain, then SIGKILL of its children and of itself.

The services get this process's environment, so the TLS and authentication settings
(``CHRONOS_TLS_*``, ``CHRONOS_AUTH_*``) the local stack exports reach them unchanged;
a set started with ``insecure=True`` runs them plaintext and without authentication
instead (``CHRONOS_INSECURE_NO_TLS``/``CHRONOS_INSECURE_NO_AUTH``), which the bench
uses to measure what security costs.

:class:`Services` starts an isolated set (its own database, topic, index prefix and
consumer group, every port free) and stops it on exit; :mod:`chronos_dev.foreground`
runs the set the environment describes (``chronos-dev services``) with the same parts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.errors import ChronosError
from chronos.security import config as security
from chronos.top import scrape
from chronos_dev.client import ClientSecurity, channel, client_security
from chronos_dev.proc import children_of, environment_of
from chronos_dev.stack.base import LOOPBACK_HOST, free_port

# This file is <repository>/scripts/chronos_dev/launcher.py.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# In start order: the writer first, the read side after it, the query server last.
SERVICE_MODULES = ("command_server", "outbox_poller", "projector", "query_server")
METRICS_PORT_VARIABLES = {
    "command_server": "CHRONOS_COMMAND_METRICS_PORT",
    "outbox_poller": "CHRONOS_POLLER_METRICS_PORT",
    "projector": "CHRONOS_PROJECTOR_METRICS_PORT",
    "query_server": "CHRONOS_QUERY_METRICS_PORT",
}
# The gRPC servers alone, without the pipeline behind them.
SERVER_MODULES = ("command_server", "query_server")
# Exporting spans costs CPU that is no part of the path a benchmark measures.
TRACING_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "CHRONOS_TRACE_FILE")
# What makes a server serve TLS and check tokens; an insecure set runs without them.
SERVER_SECURITY_VARIABLES = tuple(
    setting.name
    for setting in (
        security.TLS_CERT_FILE,
        security.TLS_KEY_FILE,
        security.TLS_CLIENT_CA_FILE,
        security.AUTH_JWKS_FILE,
        security.AUTH_OIDC_ISSUER,
    )
)
# Development only, and on loopback only: plaintext, and every call admitted as admin.
INSECURE_SETTINGS = {security.INSECURE_NO_TLS.name: "1", security.INSECURE_NO_AUTH.name: "1"}
PLAINTEXT = ClientSecurity(ca_pem=None, token=None)
START_WAIT_SECONDS_MAX = 120.0
STOP_WAIT_SECONDS_MAX = 30.0
KILL_WAIT_SECONDS_MAX = 10.0
LOG_TAIL_CHARACTERS = 3000
_POLL_INTERVAL_SECONDS = 0.1


class LaunchError(ChronosError):
    """A service exited while starting, or did not become ready in time."""


class PortAllocator:
    """Hands out free ports of 127.0.0.1, never the same one twice.

    The kernel may pick the same free port twice in a row, and two services given one
    port fail; so every port handed out is remembered and avoided.
    """

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def take(self) -> int:
        """A port that is free now and was not handed out before."""
        port = free_port(avoid=self._taken)
        self._taken.add(port)
        return port

    def address(self) -> str:
        """``127.0.0.1:<port>`` with a port from :meth:`take`."""
        return f"{LOOPBACK_HOST}:{self.take()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Backends:
    """Where one set of services keeps its data: servers, database, topic, prefix, group."""

    pg_dsn: str
    kafka_bootstrap: str
    es_url: str
    events_topic: str
    index_prefix: str
    projector_group: str

    def environment(self) -> dict[str, str]:
        """The ``CHRONOS_*`` variables that point the services at these backends."""
        return {
            "CHRONOS_PG_DSN": self.pg_dsn,
            "CHRONOS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "CHRONOS_ES_URL": self.es_url,
            "CHRONOS_EVENTS_TOPIC": self.events_topic,
            "CHRONOS_INDEX_PREFIX": self.index_prefix,
            "CHRONOS_PROJECTOR_GROUP": self.projector_group,
        }


def service_environment(
    overrides: Mapping[str, str], *, without: Collection[str] = ()
) -> dict[str, str]:
    """This process's environment minus ``without``, plus ``overrides``, with the
    repository first on ``PYTHONPATH`` (so the services import this checkout)."""
    env = {name: value for name, value in os.environ.items() if name not in without}
    env.update(overrides)
    python_path = [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH", "")])]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    return env


def spawn(module: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Starts ``python -m module`` with exactly ``env``, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            process_group=0,
        )


def log_tail(log_path: Path) -> str:
    """The end of a service's log, for error messages."""
    try:
        return log_path.read_text(errors="replace")[-LOG_TAIL_CHARACTERS:]
    except OSError as error:
        return f"({log_path}: {error.strerror})"


def check_alive(module: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Raises :class:`LaunchError` with the log's end when the service has exited."""
    if process.poll() is not None:
        raise LaunchError(
            f"{module} exited with status {process.returncode}:\n{log_tail(log_path)}"
        )


def wait_serving(
    module: str,
    address: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    *,
    deadline: float,
    security_: ClientSecurity | None = None,
) -> None:
    """Waits until the gRPC health check at ``address`` says SERVING (until ``deadline``,
    a ``time.monotonic()`` value), over TLS when ``security_`` (default: the
    environment's) names a CA. No token is sent: health is open, for load balancers.

    Raises:
        LaunchError: the service exited, or was not serving by the deadline.
    """
    resolved = client_security() if security_ is None else security_
    with channel(address, security_=ClientSecurity(ca_pem=resolved.ca_pem, token=None)) as open_:
        stub = health_pb2_grpc.HealthStub(open_)
        while time.monotonic() < deadline:
            check_alive(module, process, log_path)
            with contextlib.suppress(grpc.RpcError):
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(_POLL_INTERVAL_SECONDS)
    raise LaunchError(f"{module} at {address} not serving in time:\n{log_tail(log_path)}")


def wait_metrics(
    module: str,
    endpoint: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    *,
    deadline: float,
) -> None:
    """Waits until the metrics endpoint (``host:port``) answers a scrape.

    Raises:
        LaunchError: the service exited, or its metrics did not answer by the deadline.
    """
    while time.monotonic() < deadline:
        check_alive(module, process, log_path)
        if scrape(endpoint) is not None:
            return
        time.sleep(_POLL_INTERVAL_SECONDS)
    raise LaunchError(f"{module} metrics at {endpoint} not answering in time")


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, a bounded wait for a clean exit, then SIGKILL (children first)."""
    stop_all([process])


def stop_all(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """Sends every process SIGTERM at once, then waits for each (bounded) and kills the
    ones still running.

    The command and query servers' supervisors pass SIGTERM on to their workers; if one
    has to be killed, its workers are killed first, while they are still recognisably
    its children, so none is left behind.
    """
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_SECONDS_MAX
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for child in children_of(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            process.kill()
            process.wait(timeout=KILL_WAIT_SECONDS_MAX)


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
    # What the set's clients use: its CA (None: plaintext) and an admin token (or none).
    security: ClientSecurity = field(default=PLAINTEXT, repr=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # "command_server worker <i>" -> pid (the worker itself when there is one process).
    command_worker_pids: dict[str, int] = field(default_factory=dict)
    query_worker_pids: dict[str, int] = field(default_factory=dict)

    def metrics_endpoints(self) -> dict[str, list[str]]:
        """Service module -> its metrics endpoints."""
        return {
            "command_server": self.command_metrics,
            "outbox_poller": [self.poller_metrics],
            "projector": [self.projector_metrics],
            "query_server": self.query_metrics,
        }

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
    """Context manager that starts an isolated set of the four services and stops it.

    Every address and metrics port is a free port of 127.0.0.1; tracing exporters are
    off. On entry it waits until both servers serve, every metrics endpoint answers and
    the workers of multi-process servers are known.

    ``modules`` may leave out the outbox poller and the projector (:data:`SERVER_MODULES`):
    a second set of servers on the same backends, whose events the first set's pipeline
    carries. With ``insecure`` the servers run plaintext and without authentication,
    whatever the environment says.
    """

    def __init__(
        self,
        backends: Backends,
        *,
        log_dir: Path,
        command_processes: int = 1,
        query_processes: int = 1,
        ports: PortAllocator | None = None,
        modules: Sequence[str] = SERVICE_MODULES,
        insecure: bool = False,
    ) -> None:
        assert set(SERVER_MODULES) <= set(modules) <= set(SERVICE_MODULES), modules
        self._backends = backends
        self._modules = tuple(module for module in SERVICE_MODULES if module in modules)
        self._insecure = insecure
        self._command_processes = command_processes
        self._query_processes = query_processes
        self._log_dir = log_dir
        ports = ports if ports is not None else PortAllocator()
        self.services = ServiceSet(
            command_addr=ports.address(),
            query_addr=ports.address(),
            command_metrics=[ports.address()],
            poller_metrics=ports.address(),
            projector_metrics=ports.address(),
            query_metrics=[ports.address()],
        )
        self.services.security = client_security(self.environment())

    def environment(self) -> dict[str, str]:
        """The environment of every service of the set."""
        services = self.services
        ports = {
            METRICS_PORT_VARIABLES[module]: endpoints[0].rsplit(":", 1)[1]
            for module, endpoints in services.metrics_endpoints().items()
        }
        insecure = INSECURE_SETTINGS if self._insecure else {}
        return service_environment(
            {
                **self._backends.environment(),
                **ports,
                "CHRONOS_COMMAND_ADDR": services.command_addr,
                "CHRONOS_QUERY_ADDR": services.query_addr,
                "CHRONOS_COMMAND_PROCESSES": str(self._command_processes),
                "CHRONOS_QUERY_PROCESSES": str(self._query_processes),
                **insecure,
            },
            without=(*TRACING_VARIABLES, *(SERVER_SECURITY_VARIABLES if self._insecure else ())),
        )

    def log_path(self, module: str) -> Path:
        """Where ``module`` writes its output."""
        return self._log_dir / f"{module}.log"

    def __enter__(self) -> ServiceSet:
        env = self.environment()
        services = self.services
        try:
            for module in self._modules:
                services.processes[module] = spawn(module, env, self.log_path(module))
            deadline = time.monotonic() + START_WAIT_SECONDS_MAX
            for module, address in (
                ("command_server", services.command_addr),
                ("query_server", services.query_addr),
            ):
                wait_serving(
                    module,
                    address,
                    services.processes[module],
                    self.log_path(module),
                    deadline=deadline,
                    security_=services.security,
                )
            for module, endpoints in services.metrics_endpoints().items():
                for endpoint in endpoints if module in services.processes else ():
                    self._wait(wait_metrics, module, endpoint, deadline)
            services.command_worker_pids = self._workers(
                "command_server", "COMMAND", self._command_processes, deadline
            )
            services.query_worker_pids = self._workers(
                "query_server", "QUERY", self._query_processes, deadline
            )
        except BaseException:
            stop_all(list(services.processes.values()))
            raise
        return services

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stop_all(list(self.services.processes.values()))

    def _wait(self, wait: Callable[..., None], module: str, target: str, deadline: float) -> None:
        process = self.services.processes[module]
        wait(module, target, process, self.log_path(module), deadline=deadline)

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
        raise LaunchError(f"the {module} workers could not be found")
