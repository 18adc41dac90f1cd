"""What every service process does around its own work: read the config, set up
telemetry, serve metrics, run, flush telemetry. One place, so the four composition
roots (``*/__main__.py``) differ only in what they build."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import uvloop

from chronos import telemetry
from chronos.backend_access import BackendRefused
from chronos.config import ConfigError
from chronos.metrics import METRICS_HOST, forget_worker, serve_metrics, serve_metrics_of_workers
from chronos.settings import SettingsGroup

SETTINGS = SettingsGroup(
    title="Every service",
    summary="Read by each of the four processes above, through `run_service`.",
    settings=(
        telemetry.LOG_LEVEL,
        telemetry.TRACE_FILE,
        telemetry.TRACE_SAMPLE_RATIO,
        METRICS_HOST,
    ),
)


class ServiceConfig(Protocol):
    @property
    def metrics_port(self) -> int: ...


class ServerConfig(ServiceConfig, Protocol):
    @property
    def processes(self) -> int: ...


ConfigT = TypeVar("ConfigT", bound=ServiceConfig)
ServerConfigT = TypeVar("ServerConfigT", bound=ServerConfig)


def run_service(
    service: str, load_config: Callable[[], ConfigT], body: Callable[[ConfigT], int]
) -> int:
    """Runs ``body(config)`` as the process named ``service``; returns its exit code.

    A configuration error exits with code 2 and one line on stderr, before anything
    starts; a backend refusing the credentials at start (``BackendRefused``) exits with
    code 1 and one line on stderr, without a traceback.
    """
    try:
        config = load_config()
        telemetry.configure(service)
    except ConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        return 2
    serve_metrics(config.metrics_port)
    try:
        return body(config)
    except ConfigError as error:
        # Found while building a client from settings that are valid one by one.
        print(f"{service}: {error}", file=sys.stderr, flush=True)
        return 2
    except BackendRefused as error:
        print(f"{service}: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        telemetry.shutdown()


def supervise(*, module: str, prefix: str, processes: int, metrics_port: int) -> int:
    """Runs ``processes`` copies of ``python -m module`` sharing one port (SO_REUSEPORT).

    Python runs one core's worth of work per process; the kernel spreads incoming
    connections over the workers. Worker i gets ``CHRONOS_<prefix>_PROCESSES=1`` and
    ``CHRONOS_REUSE_PORT=1``. The workers record their metrics in a private directory
    and the supervisor serves their sum on ``metrics_port``, so a server is one scrape
    target however many processes it runs (a port per worker collided with the next
    service's port and showed each worker's share only). SIGTERM/SIGINT are passed on;
    returns when every worker has exited. A worker that exits on its own (a crash, an
    OOM kill) stops the others and the supervisor exits non-zero: the server would
    otherwise go on with fewer workers and nobody would notice; whoever runs it
    (``scripts/run``, an orchestrator) restarts it whole.
    """
    metrics_dir = tempfile.mkdtemp(prefix=f"chronos-{prefix.lower()}-metrics-")
    try:
        # First, so that a taken port fails before any worker starts.
        serve_metrics_of_workers(metrics_port, metrics_dir)
        workers = []
        for index in range(processes):
            env = dict(os.environ)
            env[f"CHRONOS_{prefix}_WORKER_INDEX"] = str(index)
            env[f"CHRONOS_{prefix}_PROCESSES"] = "1"
            env["CHRONOS_REUSE_PORT"] = "1"
            env[f"CHRONOS_{prefix}_METRICS_PORT"] = "0"
            env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            workers.append(subprocess.Popen([sys.executable, "-m", module], env=env))

        alive = {worker.pid: worker for worker in workers}
        stopping = False

        def forward(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            for pid in list(alive):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

        def reload(signum: int, _frame: object) -> None:
            # SIGHUP asks the workers to read their TLS files again; it stops nothing.
            for pid in list(alive):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGHUP, reload)
        code = 0
        while alive:
            pid, status = os.wait()
            worker = alive.pop(pid, None)
            if worker is None:
                continue
            worker.returncode = os.waitstatus_to_exitcode(status)
            forget_worker(pid, metrics_dir)
            if not stopping:
                print(
                    f"{module}: worker {pid} exited on its own ({worker.returncode}); "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                forward(signal.SIGTERM, None)
                code = worker.returncode if worker.returncode > 0 else 1
            elif abs(worker.returncode) > abs(code):
                code = worker.returncode
        return code
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def run_grpc_server(
    *,
    service: str,
    module: str,
    prefix: str,
    load_config: Callable[[], ServerConfigT],
    serve: Callable[[ServerConfigT], Coroutine[Any, Any, None]],
) -> int:
    """``main`` of a gRPC server process: one process, or a supervisor of
    ``config.processes`` workers on one port when that is more than 1."""
    try:
        config = load_config()
    except ConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        return 2
    if config.processes > 1:
        return supervise(
            module=module,
            prefix=prefix,
            processes=config.processes,
            metrics_port=config.metrics_port,
        )

    def body(loaded: ServerConfigT) -> int:
        # uvloop's event loop (libuv, in C) instead of asyncio's: gRPC's Python server
        # spends most of its time in event-loop callbacks, so a faster loop shows in every
        # call's throughput.
        uvloop.run(serve(loaded))
        return 0

    return run_service(service, lambda: config, body)
