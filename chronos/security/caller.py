"""The caller of one gRPC call, as its verified token describes it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who is calling and what they may do.

    ``subject`` is the token's ``sub`` (the principal: idempotency records are scoped by
    it, and events record it); ``token_id`` its ``jti``; ``scopes`` the granted scope
    names (``chronos.security.scopes``); ``accounts`` the account restriction, or None
    when the token may act on every account.
    """

    subject: str
    token_id: str = ""
    scopes: frozenset[str] = frozenset()
    accounts: frozenset[str] | None = None
    expires_at: float = float("inf")


# What a call runs as when authentication is turned off for development (an explicit,
# loopback-only setting): every scope, and no identity recorded on events.
UNAUTHENTICATED = Caller(subject="", scopes=frozenset({"admin"}))

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "chronos_caller", default=UNAUTHENTICATED
)


def current_caller() -> Caller:
    """The caller of the call this task serves (set by the servers' authentication)."""
    return _current.get()


def set_current_caller(caller: Caller) -> contextvars.Token[Caller]:
    """Makes ``caller`` the current one; returns the token that restores the previous."""
    return _current.set(caller)


def reset_current_caller(token: contextvars.Token[Caller]) -> None:
    _current.reset(token)
