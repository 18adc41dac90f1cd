"""``chronos-dev services``: the launcher in the foreground, as ``scripts/run`` uses it.

It runs the four real services and the ledger console on a fresh database, topic,
consumer group and index prefix, reports them serving, and stops every one of them on
SIGTERM (exit 0) or as soon as one of them dies (exit 1).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronos.security import config as security
from chronos_dev import launcher
from chronos_dev.client import channel as open_channel
from chronos_dev.console import MODULE as CONSOLE_MODULE
from chronos_dev.proc import children_of, environment_of
from tests.e2e.helpers import PROJECT_ROOT, PipelineEnv, free_port, pipeline_env

READY_SECONDS_MAX = 120.0
EXIT_SECONDS_MAX = 60.0


# The last line `chronos-dev services` prints once it runs: a grpcurl line to paste.
LAST_LINE = re.compile(r"^  grpcurl .*(-plaintext|refused).*\n", re.MULTILINE)


@contextmanager
def foreground(
    pipeline: PipelineEnv, log_dir: Path, console_addr: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``chronos-dev services`` on the pipeline, once it printed that it is running, and
    what it printed."""
    quiet_metrics = {variable: "0" for variable in launcher.METRICS_PORT_VARIABLES.values()}
    console = ["--console-addr", console_addr]
    console += ["--console-token-file", str(log_dir.parent / "console-token")]
    process = subprocess.Popen(
        [sys.executable, "-m", "chronos_dev.cli", "services", "--log-dir", str(log_dir), *console],
        env=launcher.service_environment({**quiet_metrics, **pipeline.env}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + READY_SECONDS_MAX
        output = ""
        # The endpoints' table, then the lines to paste.
        while LAST_LINE.search(output) is None:
            assert time.monotonic() < deadline, f"not running in time:\n{output}"
            assert process.poll() is None, f"exited with {process.returncode}:\n{output}"
            readable, _, _ = select.select([process.stdout], [], [], 1.0)
            if readable:
                output += os.read(process.stdout.fileno(), 65536).decode(errors="replace")
        assert f"grpc://{pipeline.command_addr}" in output
        yield process, output
    finally:
        launcher.stop(process)


def services_of(process: subprocess.Popen[bytes]) -> dict[str, int]:
    """Module -> pid of the services the launcher started (its children)."""
    found: dict[str, int] = {}
    for pid in children_of(process.pid):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        found[command[2].decode()] = pid
    return found


def serving(address: str) -> bool:
    with open_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@dataclass(frozen=True)
class Launched:
    pipeline: PipelineEnv
    process: subprocess.Popen[bytes]
    services: dict[str, int]
    output: str
    console_addr: str


@pytest.fixture
def launched(pg_dsn: str, kafka_bootstrap: str, es_url: str, tmp_path: Path) -> Iterator[Launched]:
    console_addr = f"127.0.0.1:{free_port()}"
    with (
        pipeline_env(pg_dsn, kafka_bootstrap, es_url, "launcher") as pipeline,
        foreground(pipeline, tmp_path / "logs", console_addr) as (process, output),
    ):
        yield Launched(pipeline, process, services_of(process), output, console_addr)


def test_sigterm_stops_every_service(launched: Launched, tmp_path: Path) -> None:
    pipeline, process, services = launched.pipeline, launched.process, launched.services
    assert sorted(services) == sorted([*launcher.SERVICE_MODULES, CONSOLE_MODULE])
    assert serving(pipeline.command_addr)
    assert serving(pipeline.query_addr)
    # The services point at this pipeline's database, not at the inherited one.
    assert environment_of(services["projector"])["CHRONOS_PG_DSN"] == pipeline.pg_dsn
    # Each service is in a process group of its own: a terminal's Ctrl-C reaches
    # only the launcher, which stops them in order.
    assert all(os.getpgid(pid) == pid for pid in services.values())

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_SECONDS_MAX) == 0
    assert all(is_gone(pid) for pid in services.values())
    assert all((tmp_path / "logs" / f"{module}.log").is_file() for module in services)
    # A clean stop after SIGTERM, not a SIGKILL after the bounded wait.
    assert "command server stopped" in (tmp_path / "logs" / "command_server.log").read_text()


def grpcurl_environment() -> dict[str, str]:
    """This environment with grpcurl on PATH; skips the test when it is not installed."""
    grpcurl = shutil.which("grpcurl") or str(Path.home() / "go" / "bin" / "grpcurl")
    if not os.access(grpcurl, os.X_OK):
        pytest.skip("grpcurl is not installed (scripts/go-tool grpcurl)")
    return {**os.environ, "PATH": f"{Path(grpcurl).parent}{os.pathsep}{os.environ['PATH']}"}


def secured() -> bool:
    """Whether this session's servers serve TLS (the environment names the CA)."""
    return security.TLS_CA_FILE.read() != "" and not security.INSECURE_NO_TLS.read()


def test_the_printed_grpcurl_lines_work(launched: Launched) -> None:
    environment = grpcurl_environment()
    lines = [line.strip() for line in launched.output.splitlines()]
    pasted = [line for line in lines if line.startswith("grpcurl ")]

    def run(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line], env=environment, capture_output=True, text=True, timeout=60
        )

    if not secured():
        assert pasted == [f"grpcurl -plaintext {launched.pipeline.command_addr} list"]
    else:
        assert len(pasted) == 2 and all("-cacert " in line for line in pasted), pasted
        assert "authorization: Bearer $(" in pasted[0] and "token issue" in pasted[0]
        refused = run(pasted[1])
        assert refused.returncode != 0
        assert "Unauthenticated" in refused.stdout + refused.stderr, refused
    listed = run(pasted[0])
    assert listed.returncode == 0, listed
    assert "chronos.v1.CommandService" in listed.stdout.split()


def test_the_demo_walks_through_every_call(launched: Launched) -> None:
    environment = grpcurl_environment()
    if not secured():
        # Plaintext servers: the demo must not pick up the local stack's CA instead.
        environment.update(launcher.INSECURE_SETTINGS)
    pipeline = launched.pipeline
    completed = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "demo"), pipeline.command_addr, pipeline.query_addr],
        # The pipeline's database and topic: the demo's `chronos verify` checks the
        # ledger its calls wrote.
        env={**environment, **pipeline.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "chronos.v1.CommandService" in output
    assert '"replayed": true' in output
    for reason in (
        "ACCOUNT_FROZEN",
        "INSUFFICIENT_FUNDS",
        "VALIDATION_FAILED",
        "LINKED_COMMAND_FAILED",
        "PENDING_TRANSFER_NOT_PENDING",
        "ENTRY_ALREADY_REVERSED",
        "ENTRY_NOT_REVERSIBLE",
        "ENTRY_NOT_FOUND",
    ):
        assert f'"reason": "{reason}"' in output
    # The event log's section: an entry and its events, read back through the pipeline.
    assert '"state": "ENTRY_STATE_REVERSED"' in output
    assert '"event_type": "FundsTransferred"' in output
    # The audit trail's section: the chain the demo's own commands extended is intact.
    assert "$ chronos verify --no-progress\nchain intact: positions 1.." in output
    calls = [line for line in output.splitlines() if line.startswith("$ grpcurl ")]
    assert len(calls) > 20
    if secured():
        assert all(" -cacert " in call for call in calls)
        assert '"reason": "UNAUTHENTICATED"' in output or "Unauthenticated" in output
        # The token is shown by name only.
        with_token = [call for call in calls if 'authorization: Bearer $TOKEN"' in call]
        assert len(with_token) == len(calls) - 1
        assert "eyJ" not in output
    else:
        assert all(call.startswith("$ grpcurl -plaintext ") for call in calls)


def test_the_printed_console_serves_the_event_log(launched: Launched) -> None:
    url = f"http://{launched.console_addr}/"
    assert f"  console          {url}" in launched.output
    with urllib.request.urlopen(url + "api/ListEvents?page_size=1", timeout=30) as answer:
        assert answer.status == 200 and "as_of_position" in json.loads(answer.read())
    console = environment_of(launched.services[CONSOLE_MODULE])
    token_file = Path(console["CHRONOS_CONSOLE_TOKEN_FILE"])
    if secured():
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert token_file.read_text() not in launched.output


def test_a_service_that_dies_stops_the_rest(launched: Launched) -> None:
    process, services = launched.process, launched.services
    os.kill(services["projector"], signal.SIGKILL)
    assert process.wait(timeout=EXIT_SECONDS_MAX) == 1
    assert all(is_gone(pid) for pid in services.values())
    assert process.stdout is not None
    assert b"projector exited" in process.stdout.read()
