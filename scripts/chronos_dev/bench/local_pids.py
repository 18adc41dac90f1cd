"""The pids of servers given by address only, when they listen on this machine.

A stack named by ``CHRONOS_PG_DSN``/``CHRONOS_KAFKA_BOOTSTRAP``/``CHRONOS_ES_URL`` (an
"external" stack, e.g. one another checkout started) comes without pids, so the bench
could neither watch its memory nor split its CPU by component. When such a server
listens on a loopback address, its process is the one holding the listening socket:
found through ``/proc/net/tcp{,6}`` (the socket's inode) and ``/proc/<pid>/fd`` (who
holds it). Processes the bench may not inspect are skipped, so a server can stay
unknown; nothing here raises.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from chronos_dev.bench.resources import Infrastructure
from chronos_dev.proc import parent_pids

_PROC = Path("/proc")
_LISTEN_STATE = "0A"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_POSTGRES_PORT_DEFAULT = 5432


def _loopback_port(host: str | None, port: int | str | None) -> int | None:
    """``port`` as an int when ``host`` is this machine's loopback, else None."""
    if host not in _LOOPBACK_HOSTS or port is None:
        return None
    try:
        return int(port)
    except ValueError:
        return None


def server_ports(infrastructure: Infrastructure) -> dict[str, int]:
    """Server name (as ``chronos infra`` names it) -> its port, for the loopback ones."""
    ports: dict[str, int | None] = {}
    postgres = conninfo_to_dict(infrastructure.pg_server_dsn)
    ports["postgres"] = _loopback_port(
        str(postgres.get("host", "localhost")), postgres.get("port", _POSTGRES_PORT_DEFAULT)
    )
    kafka = urlsplit("//" + infrastructure.kafka_bootstrap.split(",")[0])
    ports["kafka"] = _loopback_port(kafka.hostname, kafka.port)
    elasticsearch = urlsplit(infrastructure.es_url)
    ports["elasticsearch"] = _loopback_port(elasticsearch.hostname, elasticsearch.port)
    return {name: port for name, port in ports.items() if port is not None}


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _LISTEN_STATE:
                inodes.add(fields[9])
    return inodes


def _holders(sockets: set[str]) -> set[int]:
    """The pids holding any of ``sockets`` (``socket:[<inode>]``) open."""
    holders: set[int] = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = os.listdir(entry / "fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(entry / "fd" / descriptor)
            except OSError:
                continue
            if target in sockets:
                holders.add(int(entry.name))
                break
    return holders


def listening_pids(infrastructure: Infrastructure) -> dict[str, int]:
    """Server name -> pid of the process listening on its loopback port, where found.

    When several processes hold the socket (children that inherited it), the one whose
    parent is not among them is the server.
    """
    found: dict[str, int] = {}
    parents: dict[int, int] | None = None
    for name, port in server_ports(infrastructure).items():
        sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
        holders = _holders(sockets) if sockets else set()
        if not holders:
            continue
        if parents is None:
            parents = parent_pids()
        roots = [pid for pid in holders if parents.get(pid) not in holders]
        if len(roots) == 1:
            found[name] = roots[0]
    return found
