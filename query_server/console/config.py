"""Console settings, read once from the environment at start.

The declarations below are the reference (docs/configuration.md is generated from them).
The console is a client of the query server: it reads that server's address
(``CHRONOS_QUERY_ADDR``) and the clients' TLS settings (``CHRONOS_TLS_CA_FILE``) from the
same declarations the servers and tools use.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from chronos.rpc import parse_address
from chronos.security.config import INSECURE_NO_TLS, TLS_CA_FILE
from chronos.settings import ConfigError, SettingsGroup, number, text
from query_server.config import ADDRESS as QUERY_ADDRESS

ADDRESS = text(
    "CHRONOS_CONSOLE_ADDRESS",
    "127.0.0.1:8080",
    check=parse_address,
    type_name="host:port",
    bounds="a loopback host:port",
    doc="Where the console serves HTTP; loopback only (it holds a read token).",
)
TOKEN_FILE = text(
    "CHRONOS_CONSOLE_TOKEN_FILE",
    "",
    type_name="path",
    doc="File holding the console's bearer token (scope `ledger:read`); re-read when it "
    "changes. Empty: no token (a query server run with `CHRONOS_INSECURE_NO_AUTH`).",
)
TRACE_URL_TEMPLATE = text(
    "CHRONOS_CONSOLE_TRACE_URL_TEMPLATE",
    "",
    type_name="URL template",
    doc="Link of a trace id, `{trace_id}` replaced, e.g. "
    "`http://127.0.0.1:16686/trace/{trace_id}` (Jaeger). Empty: trace ids are not links.",
)
CALL_TIMEOUT_SECONDS = number(
    "CHRONOS_CONSOLE_CALL_TIMEOUT_SECONDS",
    5.0,
    minimum=0.1,
    maximum=60.0,
    doc="Deadline of one query the console makes for a page.",
)

SETTINGS = SettingsGroup(
    title="Ledger console",
    summary="`python -m query_server.console`: a read-only web page over the query "
    "server, started by `scripts/run`; see docs/console.md.",
    settings=(
        ADDRESS,
        QUERY_ADDRESS,
        TLS_CA_FILE,
        INSECURE_NO_TLS,
        TOKEN_FILE,
        TRACE_URL_TEMPLATE,
        CALL_TIMEOUT_SECONDS,
    ),
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleConfig:
    address: str
    query_address: str
    # False: plaintext to the query server (development only, as the servers allow).
    tls: bool
    # None: trust the system's roots.
    ca_file: str | None
    token_file: str | None
    trace_url_template: str
    call_timeout_seconds: float

    @classmethod
    def from_env(cls) -> ConsoleConfig:
        """Reads ``CHRONOS_*`` variables (see ``SETTINGS`` and docs/configuration.md).

        Raises:
            ConfigError: a value is missing or malformed, or the address is not loopback.
        """
        address = ADDRESS.read()
        host, _ = parse_address(address)
        if not is_loopback(host):
            raise ConfigError(
                f"{ADDRESS.name}={address!r}: the console serves on a loopback address only"
            )
        template = TRACE_URL_TEMPLATE.read()
        if template and "{trace_id}" not in template:
            raise ConfigError(f"{TRACE_URL_TEMPLATE.name} must contain {{trace_id}}")
        return cls(
            address=address,
            query_address=QUERY_ADDRESS.read(),
            tls=not INSECURE_NO_TLS.read(),
            ca_file=TLS_CA_FILE.read() or None,
            token_file=TOKEN_FILE.read() or None,
            trace_url_template=template,
            call_timeout_seconds=CALL_TIMEOUT_SECONDS.read(),
        )
