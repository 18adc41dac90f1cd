"""Starting the ledger console (``python -m query_server.console``) next to the services,
for ``scripts/run``, the screenshots and the browser tests: its read-only token, its
process, and the wait until it answers HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from chronos.security.scopes import LEDGER_READ
from chronos_dev.client import token_from_env
from chronos_dev.launcher import (
    LaunchError,
    check_alive,
    log_tail,
    service_environment,
    spawn,
    stop,
)
from chronos_dev.stack.base import LOOPBACK_HOST, free_port

MODULE = "query_server.console"
SUBJECT = "chronos-console"
# The console's token lasts as long as a development session may; scripts/run issues a
# new one at every start.
TOKEN_TTL_SECONDS = 7 * 24 * 3600
_POLL_INTERVAL_SECONDS = 0.1


def write_token(path: Path, environ: Mapping[str, str]) -> Path | None:
    """Writes a ``ledger:read`` token signed with the environment's key to ``path``
    (readable by its owner only); None when the environment configures no key."""
    token = token_from_env(
        environ, subject=SUBJECT, scopes=(LEDGER_READ,), ttl_seconds=TOKEN_TTL_SECONDS
    )
    if token is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return path


def console_environment(
    env: Mapping[str, str], *, address: str, query_addr: str, token_file: Path | None
) -> dict[str, str]:
    """``env`` with the console's own settings: where it serves, which query server it
    reads, and its token file."""
    return {
        **env,
        "CHRONOS_CONSOLE_ADDRESS": address,
        "CHRONOS_QUERY_ADDR": query_addr,
        "CHRONOS_CONSOLE_TOKEN_FILE": "" if token_file is None else str(token_file),
    }


def wait_http(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, deadline: float
) -> None:
    """Waits until ``url`` answers 200.

    Raises:
        LaunchError: the console exited, or did not answer by the deadline.
    """
    while time.monotonic() < deadline:
        check_alive(MODULE, process, log_path)
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(_POLL_INTERVAL_SECONDS)
    raise LaunchError(f"{MODULE} at {url} not answering in time:\n{log_tail(log_path)}")


def start_console(
    env: Mapping[str, str], address: str, log_path: Path, *, deadline: float
) -> subprocess.Popen[bytes]:
    """Starts the console with ``env`` (see :func:`console_environment`) and waits until
    it serves its page."""
    process = spawn(MODULE, env, log_path)
    try:
        wait_http(f"http://{address}/", process, log_path, deadline=deadline)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


@contextlib.contextmanager
def console_for(
    environment: Mapping[str, str], query_addr: str, directory: Path, *, deadline: float
) -> Iterator[str]:
    """A console on a free loopback port, reading the query server at ``query_addr`` with
    a token issued now from ``environment``'s signing key (written under ``directory``,
    with the console's log); yields its URL, and stops it on exit."""
    address = f"{LOOPBACK_HOST}:{free_port()}"
    env = service_environment(
        console_environment(
            environment,
            address=address,
            query_addr=query_addr,
            token_file=write_token(directory / "console-token", environment),
        )
    )
    process = start_console(env, address, directory / "console.log", deadline=deadline)
    try:
        yield f"http://{address}/"
    finally:
        stop(process)
