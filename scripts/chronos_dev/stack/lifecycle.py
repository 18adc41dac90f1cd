"""One server's process lifecycle: the pre-start checks, the bounded wait until it
answers, and stopping it (gracefully, or aborting a failed start).

Each function works on one :class:`~chronos_dev.stack.base.Server` and the record that
state.json keeps for it; :class:`~chronos_dev.stack.stack.Stack` calls them for each server.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping

from chronos_dev.stack import InfraError, tail_lines
from chronos_dev.stack.base import LOOPBACK_HOST, Server, ServerContext, port_is_free
from chronos_dev.stack.processes import KILL_WAIT_SECONDS, process_start_ticks, terminate_process
from chronos_dev.stack.state import ServerRecord

POLL_INTERVAL_SECONDS = 0.5


def log_excerpt(server: Server, context: ServerContext) -> str:
    """The last lines of the server's logs (the main one, and the others that have text)."""
    parts: list[str] = []
    for index, path in enumerate(server.log_paths(context.stack_dir)):
        if index > 0 and (not path.exists() or path.stat().st_size == 0):
            continue
        parts.append(f"Log {path}, last lines:\n{tail_lines(path)}")
    return "\n".join(parts)


def check_running(server: Server, context: ServerContext, record: ServerRecord) -> None:
    """Checks that an already running server has the wanted ports and answers (bounded).

    Raises:
        InfraError: it runs on other ports, or does not answer in time.
    """
    if context.ports != record.ports:
        wanted = ", ".join(
            f"{server.port_envs[name]}={port}" for name, port in context.ports.items()
        )
        raise InfraError(
            f"{server.title} is already running (pid {record.pid}) on ports {record.ports}, "
            f"but the environment asks for {wanted}; run `chronos-dev infra down` first."
        )
    deadline = time.monotonic() + server.ready_timeout_seconds
    while not server.probe(context):
        # It may still be booting from an `up` that was interrupted.
        if time.monotonic() > deadline or not record.is_running():
            raise InfraError(
                f"{server.title} is running (pid {record.pid}) but does not answer on "
                f"{server.address(context.stack_dir, record.ports)}; "
                "run `chronos-dev infra down` and "
                "`chronos-dev infra up`.\n" + log_excerpt(server, context)
            )
        time.sleep(POLL_INTERVAL_SECONDS)


def check_ports_free(server: Server, ports: Mapping[str, int]) -> None:
    """Raises :class:`InfraError` naming the variable to change when a port is taken."""
    for port_name, port in ports.items():
        if not port_is_free(port):
            variable = server.port_envs[port_name]
            raise InfraError(
                f"{server.title}: port {port} on {LOOPBACK_HOST} is already in use by "
                f"another process. Set {variable} to another port, or stop what listens "
                f"there (see `ss -ltnp 'sport = :{port}'`)."
            )


def wait_ready(
    server: Server,
    context: ServerContext,
    process: subprocess.Popen[bytes],
    record: ServerRecord,
    *,
    on_identified: Callable[[], None],
) -> None:
    """Waits until the launched server answers, recording its pid once known.

    Args:
        on_identified: called once the record has the server's pid (to save the state).

    Raises:
        InfraError: the server exited, or did not answer within its ready timeout.
    """
    deadline = time.monotonic() + server.ready_timeout_seconds
    while True:
        if record.pid is None:
            pid = server.server_pid(context, process)
            ticks = process_start_ticks(pid) if pid is not None else None
            if pid is not None and ticks is not None:
                record.pid, record.process_start_ticks = pid, ticks
                record.started_at = datetime.datetime.now(datetime.UTC).isoformat(
                    timespec="seconds"
                )
                on_identified()
        exit_code = process.poll()
        launcher_failed = exit_code is not None and (not server.detaches or exit_code != 0)
        server_gone = record.pid is not None and not record.is_running()
        if launcher_failed or server_gone:
            reason = (
                f"exited with code {exit_code}"
                if launcher_failed
                else f"process {record.pid} exited"
            )
            raise InfraError(
                f"{server.title} failed to start: {reason}.\n" + log_excerpt(server, context)
            )
        if record.pid is not None and server.probe(context):
            return
        if time.monotonic() > deadline:
            raise InfraError(
                f"{server.title} did not become ready within "
                f"{server.ready_timeout_seconds:.0f} s on "
                f"{server.address(context.stack_dir, context.ports)}.\n"
                + log_excerpt(server, context)
            )
        time.sleep(POLL_INTERVAL_SECONDS)


def abort(
    server: Server,
    context: ServerContext,
    process: subprocess.Popen[bytes],
    record: ServerRecord,
) -> None:
    """Stops a server whose start failed, and its launcher if that has not handed over."""
    if record.is_running():
        stop(server, context, record, graceful=False)
    if process.poll() is None:
        # A launcher that has not handed over yet: its session is ours alone
        # (start_new_session), so signal that whole process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=KILL_WAIT_SECONDS)
    record.pid = record.process_start_ticks = record.started_at = None


def stop(
    server: Server,
    context: ServerContext,
    record: ServerRecord,
    *,
    graceful: bool = True,
) -> None:
    """Stops the recorded server: its own stop tool first when graceful, then signals.

    Raises:
        InfraError: the process survived SIGKILL.
    """
    assert record.pid is not None and record.process_start_ticks is not None
    if graceful:
        try:
            server.before_stop(context)
        except InfraError as error:
            context.progress(f"{server.name}: graceful stop failed ({error}); signalling")
    terminate_process(
        record.pid, record.process_start_ticks, timeout_seconds=server.stop_timeout_seconds
    )
