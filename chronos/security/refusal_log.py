"""Every refused call (UNAUTHENTICATED, PERMISSION_DENIED, RATE_LIMITED) counted and logged
in one place, by authentication and authorization alike."""

from __future__ import annotations

import logging
from typing import Final

from chronos.domain.errors import Rejection
from chronos.metrics import AUTH_REFUSALS
from chronos.telemetry import Throttle

_logger = logging.getLogger("chronos.security")

# One line per this many seconds at most: a client with a bad token, or without a
# scope, retrying in a loop would otherwise fill the log (the counter counts every one).
REFUSAL_LOG_INTERVAL_SECONDS: Final = 10.0
_throttle = Throttle(REFUSAL_LOG_INTERVAL_SECONDS)


def record_refusal(server: str, rejection: Rejection, subject: str) -> None:
    """Counts ``rejection`` in ``chronos_auth_refusals_total`` and logs it, rate-limited,
    naming the caller's subject when known and never its token."""
    AUTH_REFUSALS.labels(server, rejection.reason.value).inc()
    held_back = _throttle.admit()
    if held_back is not None:
        _logger.warning(
            "%s server refused a call: %s %s (subject %r; %d more refusals since the last line)",
            server,
            rejection.reason.value,
            rejection.message,
            subject,
            held_back,
        )
