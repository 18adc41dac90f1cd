"""What every service process does around its own work: read the config, set up
telemetry, serve metrics, run, flush telemetry. One place, so the four composition
roots (``*/__main__.py``) differ only in what they build."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from chronos import telemetry
from chronos.config import ConfigError
from chronos.metrics import serve_metrics


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
    starts.
    """
    try:
        config = load_config()
    except ConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        return 2
    telemetry.configure(service)
    serve_metrics(config.metrics_port)
    try:
        return body(config)
    finally:
        telemetry.shutdown()


def supervise(*, module: str, prefix: str, processes: int, metrics_port: int) -> int:
    """Runs ``processes`` copies of ``python -m module`` sharing one port (SO_REUSEPORT).

    Python runs one core's worth of work per process; the kernel spreads incoming
    connections over the workers. Worker i gets ``CHRONOS_<prefix>_PROCESSES=1``,
    ``CHRONOS_REUSE_PORT=1`` and serves its metrics on ``metrics_port + i``.
    SIGTERM/SIGINT are passed on; returns when every worker has exited.
    """
    workers = []
    for index in range(processes):
        env = dict(os.environ)
        env[f"CHRONOS_{prefix}_WORKER_INDEX"] = str(index)
        env[f"CHRONOS_{prefix}_PROCESSES"] = "1"
        env["CHRONOS_REUSE_PORT"] = "1"
        if metrics_port:
            env[f"CHRONOS_{prefix}_METRICS_PORT"] = str(metrics_port + index)
        workers.append(subprocess.Popen([sys.executable, "-m", module], env=env))

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [worker.wait() for worker in workers]
    return max(codes, key=abs)


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
        asyncio.run(serve(loaded))
        return 0

    return run_service(service, lambda: config, body)
