"""Running real Chronos service processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_METRICS_NAMES = ("COMMAND", "QUERY", "POLLER", "PROJECTOR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def service_process(
    module: str, env: dict[str, str], *, log_path: Path, grpc_address: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Starts ``python -m module``; waits until its gRPC health check says SERVING.

    On exit sends SIGTERM and waits (bounded) for a clean exit.
    """
    # Metrics endpoints are off unless a test asks for one: the documented default
    # ports may be taken by a running `scripts/run`.
    quiet_metrics = {f"CHRONOS_{name}_METRICS_PORT": "0" for name in _METRICS_NAMES}
    full_env = {**os.environ, **quiet_metrics, **env, "PYTHONPATH": str(PROJECT_ROOT)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    try:
        if grpc_address is not None:
            wait_serving(grpc_address, process, log_path)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


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
