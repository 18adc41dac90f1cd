"""``chronos-dev services``: the four services and the ledger console in the foreground,
as ``scripts/run`` uses them, started and stopped by the launcher
(:mod:`chronos_dev.launcher`, :mod:`chronos_dev.console`)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from chronos.security import config as security
from chronos_dev import console
from chronos_dev.launcher import (
    SERVICE_MODULES,
    START_WAIT_SECONDS_MAX,
    LaunchError,
    service_environment,
    spawn,
    stop_all,
    wait_serving,
)

# How often the foreground loop looks for a service that exited.
_CHECK_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class ConsoleSpec:
    """Where the console serves, and where its ``ledger:read`` token is written."""

    address: str
    token_file: Path


def run_foreground(
    *,
    command_addr: str,
    query_addr: str,
    log_dir: Path,
    console_spec: ConsoleSpec | None = None,
    trace_dir: Path | None = None,
) -> int:
    """Runs the four services (and, with ``console_spec``, the console reading the query
    server with a fresh ``ledger:read`` token) with this process's environment until
    SIGINT/SIGTERM or until one of them exits; stops them all either way.

    The metrics ports are the services' own (the environment's, else their defaults).
    With ``trace_dir``, each service writes its spans to ``<trace_dir>/<service>.jsonl``.

    Returns:
        0 after a signal; 1 when a service exited on its own or did not start.
    """
    stop_requested = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        del signal_number, frame
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    env = service_environment(
        {"CHRONOS_COMMAND_ADDR": command_addr, "CHRONOS_QUERY_ADDR": query_addr}
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for module in SERVICE_MODULES:
            module_env = dict(env)
            if trace_dir is not None:
                trace_dir.mkdir(parents=True, exist_ok=True)
                module_env["CHRONOS_TRACE_FILE"] = str(trace_dir / f"{module}.jsonl")
            processes[module] = spawn(module, module_env, log_dir / f"{module}.log")
        deadline = time.monotonic() + START_WAIT_SECONDS_MAX
        for module, address in (("command_server", command_addr), ("query_server", query_addr)):
            wait_serving(
                module, address, processes[module], log_dir / f"{module}.log", deadline=deadline
            )
        console_line = ""
        if console_spec is not None:
            processes[console.MODULE] = _start_console(env, query_addr, console_spec, log_dir)
            console_line = f"  console          http://{console_spec.address}/   (read-only)\n"
        _print_endpoints(env, command_addr, query_addr, log_dir, console_line)
        while not stop_requested.wait(_CHECK_INTERVAL_SECONDS):
            exited = [module for module, process in processes.items() if process.poll() is not None]
            if exited:
                for module in exited:
                    print(
                        f"chronos-dev services: {module} exited (status "
                        f"{processes[module].returncode}); see {log_dir / module}.log",
                        file=sys.stderr,
                    )
                return 1
        return 0
    except LaunchError as error:
        print(f"chronos-dev services: {error}", file=sys.stderr)
        return 1
    finally:
        stop_all(list(processes.values()))


def _start_console(
    env: Mapping[str, str], query_addr: str, spec: ConsoleSpec, log_dir: Path
) -> subprocess.Popen[bytes]:
    """The console, with a token issued now with the stack's signing key; without a key
    (tokens from an identity provider), the token already in the file, if any."""
    token_file = console.write_token(spec.token_file, env)
    if token_file is None and spec.token_file.is_file():
        token_file = spec.token_file
    console_env = console.console_environment(
        env, address=spec.address, query_addr=query_addr, token_file=token_file
    )
    deadline = time.monotonic() + START_WAIT_SECONDS_MAX
    log_path = log_dir / f"{console.MODULE}.log"
    return console.start_console(console_env, spec.address, log_path, deadline=deadline)


def _print_endpoints(
    env: Mapping[str, str], command_addr: str, query_addr: str, log_dir: Path, console_line: str
) -> None:
    print(
        "Chronos is running (Ctrl-C stops it):\n"
        f"  command service  grpc://{command_addr}   (chronos.v1.CommandService, reflection on)\n"
        f"  query service    grpc://{query_addr}   (chronos.v1.QueryService, reflection on)\n"
        f"{console_line}"
        f"  security         {security_summary(env)}\n"
        f"  PostgreSQL       {env.get('CHRONOS_PG_DSN', '-')}\n"
        f"  Kafka            {env.get('CHRONOS_KAFKA_BOOTSTRAP', '-')}\n"
        f"  Elasticsearch    {env.get('CHRONOS_ES_URL', '-')}\n"
        f"  service logs     {log_dir}/\n"
        "Try it:\n" + "\n".join(f"  {line}" for line in try_it_lines(env, command_addr)),
        flush=True,
    )


def _tls(env: Mapping[str, str]) -> bool:
    """Whether the servers ``env`` configures serve TLS (they have a certificate)."""
    return bool(security.TLS_CERT_FILE.read(env)) and not security.INSECURE_NO_TLS.read(env)


def _authentication(env: Mapping[str, str]) -> bool:
    """Whether the servers ``env`` configures check tokens (they have keys to check with)."""
    keys = security.AUTH_JWKS_FILE.read(env) or security.AUTH_OIDC_ISSUER.read(env)
    return bool(keys) and not security.INSECURE_NO_AUTH.read(env)


def security_summary(env: Mapping[str, str]) -> str:
    """How the servers that ``env`` configures serve, in a few words."""
    tls = "plaintext"
    if _tls(env):
        tls = "mutual TLS" if security.TLS_CLIENT_CA_FILE.read(env) else "TLS"
    authentication = "bearer tokens required" if _authentication(env) else "no authentication"
    return f"{tls}, {authentication}"


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it lies under it, shell-quoted."""
    resolved = Path(path).resolve()
    try:
        shown = str(resolved.relative_to(Path.cwd()))
    except ValueError:
        shown = str(resolved)
    return shlex.quote(shown)


def try_it_lines(env: Mapping[str, str], command_addr: str) -> list[str]:
    """Ready-to-paste grpcurl lines for the servers ``env`` configures: with TLS and
    authentication on, a call with a fresh token (``chronos token issue``, signed with
    the stack's key) and the same call without one, which the server refuses."""
    ca_file = security.TLS_CA_FILE.read(env)
    if not _tls(env):
        transport = "-plaintext"
    elif ca_file:
        transport = f"-cacert {_shown(ca_file)}"
    else:
        transport = "-cacert <the CA of the server certificate>"
    if not _authentication(env):
        return [f"grpcurl {transport} {command_addr} list"]
    key_file = security.AUTH_SIGNING_KEY_FILE.read(env)
    if key_file:
        chronos = _shown(str(Path(sys.executable).with_name("chronos")))
        issue = f"{chronos} token issue --subject you --scope admin"
        token = f"$({security.AUTH_SIGNING_KEY_FILE.name}={_shown(key_file)} {issue})"
    else:
        token = "<a token from your identity provider>"
    return [
        f'grpcurl {transport} -H "authorization: Bearer {token}" {command_addr} list',
        f"grpcurl {transport} {command_addr} list   # no token: refused, UNAUTHENTICATED",
    ]
