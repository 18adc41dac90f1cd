"""Bounded waits for every PostgreSQL session a service opens.

Without them a session can wait forever: for a lock held by a stalled peer, on a
statement, or on a peer that vanished (a half-open TCP connection only fails when the
kernel's keepalive gives up, after about two hours). Each bound is set on both ends:

* the client (libpq) probes an idle connection and gives up on unacknowledged data, so
  the service notices a dead server or a cut network;
* the server gets the same TCP settings for the session, so it notices a dead client
  and ends its session, which releases its locks (advisory locks included) and rolls
  back its transaction; and ``lock_timeout`` / ``statement_timeout`` /
  ``idle_in_transaction_session_timeout`` bound what one session can hold or wait for.
  ``idle_session_timeout`` (optional) ends a session that sends nothing at all, which
  bounds a leader whose process is stopped (SIGSTOP, a frozen VM) rather than cut off.

The defaults sit well above what a healthy group commit needs (a transaction holds its
locks for two round trips and one WAL flush) so that only a stalled peer meets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionBounds:
    """Time limits of one kind of session; 0 turns a server-side limit off."""

    lock_timeout_seconds: float = 2.0
    statement_timeout_seconds: float = 30.0
    idle_in_transaction_timeout_seconds: float = 15.0
    idle_session_timeout_seconds: float = 0.0
    # TCP: first probe after this long idle, then every interval, dead after count
    # unanswered probes; unacknowledged data is given up after the user timeout.
    keepalive_idle_seconds: int = 5
    keepalive_interval_seconds: int = 2
    keepalive_count: int = 3
    tcp_user_timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        assert self.lock_timeout_seconds >= 0 and self.statement_timeout_seconds >= 0
        assert self.idle_in_transaction_timeout_seconds >= 0
        assert self.idle_session_timeout_seconds >= 0
        assert self.keepalive_idle_seconds >= 1 and self.keepalive_interval_seconds >= 1
        assert self.keepalive_count >= 1 and self.tcp_user_timeout_seconds >= 0

    def server_options(self) -> str:
        """The ``options`` text that sets the server-side limits for the session."""
        settings = {
            "lock_timeout": _milliseconds(self.lock_timeout_seconds),
            "statement_timeout": _milliseconds(self.statement_timeout_seconds),
            "idle_in_transaction_session_timeout": _milliseconds(
                self.idle_in_transaction_timeout_seconds
            ),
            "idle_session_timeout": _milliseconds(self.idle_session_timeout_seconds),
            "tcp_keepalives_idle": self.keepalive_idle_seconds,
            "tcp_keepalives_interval": self.keepalive_interval_seconds,
            "tcp_keepalives_count": self.keepalive_count,
            "tcp_user_timeout": _milliseconds(self.tcp_user_timeout_seconds),
        }
        return " ".join(f"-c {name}={value}" for name, value in settings.items())

    def connection_kwargs(self, *, extra_options: str = "") -> dict[str, Any]:
        """libpq connection parameters: client-side keepalives and the server options."""
        options = self.server_options()
        if extra_options:
            options = f"{extra_options} {options}"
        return {
            "keepalives": 1,
            "keepalives_idle": self.keepalive_idle_seconds,
            "keepalives_interval": self.keepalive_interval_seconds,
            "keepalives_count": self.keepalive_count,
            "tcp_user_timeout": _milliseconds(self.tcp_user_timeout_seconds),
            "options": options,
        }


def _milliseconds(seconds: float) -> int:
    return round(seconds * 1000)
