"""The start-up check that PostgreSQL accepts the configured login and TLS settings."""

from __future__ import annotations

import logging

import psycopg
from psycopg.conninfo import conninfo_to_dict

from chronos.backend_access import BackendRefused
from chronos.config import PG_DSN

_logger = logging.getLogger(__name__)

LOGIN_CHECK_SECONDS = 5

# What libpq says (its messages are not localized on the client side) when the server
# answered but refused: fragment -> what to tell the operator. Anything else (refused
# TCP connection, timeout, a server still starting, a database not created yet) counts
# as unreachable, as before these checks.
_REFUSALS = (
    ("password authentication failed", "refused the password of user {user!r}"),
    ("no password supplied", "asked user {user!r} for a password and none was given"),
    ("no pg_hba.conf entry", "has no rule admitting user {user!r} (plaintext or unknown)"),
    ("certificate verify failed", "presented a certificate that did not verify"),
    ("server certificate for", "presented a certificate for another host name"),
    ("does not support ssl", "does not speak TLS, which sslmode requires"),
    ("sslmode value", "rejected the sslmode setting"),
    ("root certificate file", "could not be verified: the sslrootcert file is missing"),
)


def check_postgres_login(dsn: str) -> None:
    """Checks at start that PostgreSQL accepts the DSN's login and TLS settings.

    An unreachable server is not an error here (the services wait or answer
    UNAVAILABLE, as before); only a refusal that retrying cannot change is. The message
    names the server and the user, never the password.

    Raises:
        BackendRefused: PostgreSQL refused the login, or TLS failed.
    """
    try:
        with psycopg.connect(dsn, connect_timeout=LOGIN_CHECK_SECONDS):
            return
    except psycopg.OperationalError as error:
        detail = str(error).lower()
    params = conninfo_to_dict(dsn)
    server = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
    user = params.get("user", "?")
    for fragment, refusal in _REFUSALS:
        if fragment in detail:
            what = refusal.format(user=user)
            raise BackendRefused(
                f"PostgreSQL at {server} {what}: check {PG_DSN.name} (its user, "
                "sslmode, sslrootcert and passfile) and the password in the passfile"
            )
    _logger.warning("PostgreSQL at %s did not answer at start; carrying on", server)
