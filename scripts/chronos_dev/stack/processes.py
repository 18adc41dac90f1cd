"""Identifying, signalling and running as: the processes of the stack's servers.

A recorded pid only counts while the process with that pid has the recorded start time,
so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from chronos_dev.stack import InfraError
from chronos_dev.stack.base import Progress, ServiceAccount, no_progress

SERVICE_ACCOUNT_NAME = "chronos"
KILL_WAIT_SECONDS = 10.0


def service_account(progress: Progress = no_progress) -> ServiceAccount:
    """The unprivileged ``chronos`` system user, created with ``useradd`` when missing."""
    try:
        entry = pwd.getpwnam(SERVICE_ACCOUNT_NAME)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        command = [
            useradd,
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_ACCOUNT_NAME,
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", None) or str(error)
            raise InfraError(
                "PostgreSQL and Elasticsearch refuse to run as root, and creating the system "
                f"user {SERVICE_ACCOUNT_NAME!r} to run them failed: {detail.strip()}"
            ) from None
        progress(f"created system user {SERVICE_ACCOUNT_NAME!r} to run the servers as")
        entry = pwd.getpwnam(SERVICE_ACCOUNT_NAME)
    return ServiceAccount(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def is_root() -> bool:
    """True when this process runs as root."""
    return os.geteuid() == 0


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if it is gone.

    Together with the pid this identifies a process: pids are recycled, start times
    of different processes with the same pid differ. A zombie counts as gone (and
    is reaped if it is our child).
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return int(fields[19])


def terminate_process(pid: int, start_ticks: int, *, timeout_seconds: float) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; only while ``pid`` is still that process.

    Raises:
        InfraError: the process survived SIGKILL.
    """
    for signal_number, wait_seconds in (
        (signal.SIGTERM, timeout_seconds),
        (signal.SIGKILL, KILL_WAIT_SECONDS),
    ):
        if process_start_ticks(pid) != start_ticks:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if process_start_ticks(pid) != start_ticks:
                return
            time.sleep(0.2)
    raise InfraError(f"process {pid} is still alive after SIGKILL")


def command_line(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
