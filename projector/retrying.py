"""The projector's calls to Elasticsearch and the event store, retried while unavailable.

The waits come from the one retry policy (``chronos.retry``); what stays here is what
the projector adds to it: which errors are transient, the stop event that interrupts a
wait, and the log line and metric of each failed attempt.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from chronos.metrics import ES_BULK_FAILURES
from chronos.read_model import ReadModelUnavailable
from chronos.read_model.history import EventStoreUnavailable
from chronos.retry import Backoff
from projector.config import ProjectorConfig
from projector.errors import ProjectorStopped

_logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# The step before the first retry: short, because most unavailability is a blip (a
# node restarting, a full queue), unless the configured cap is shorter still.
_FIRST_STEP_SECONDS = 0.05


def backoff(config: ProjectorConfig) -> Backoff:
    """The projector's retry policy: capped and bounded by its settings."""
    cap_seconds = config.retry_backoff_seconds_max
    return Backoff(
        base_seconds=min(_FIRST_STEP_SECONDS, cap_seconds),
        cap_seconds=cap_seconds,
        retries_max=config.retries_max,
    )


class Retrying:
    """Runs a call, retrying it (bounded, jittered backoff) while Elasticsearch or the
    event store is unavailable.

    Args:
        policy: The waits and the number of retries.
        stop: Interrupts a wait; the call then raises ``ProjectorStopped``.
        rng: Jitter source (injected so tests control it).
    """

    def __init__(
        self, policy: Backoff, stop: threading.Event, rng: random.Random | None = None
    ) -> None:
        assert policy.retries_max is not None, "the projector gives up at some point"
        self._policy = policy
        self._attempts_max = policy.retries_max + 1
        self._stop = stop
        self._rng = rng or random.Random()

    def __call__(self, what: str, action: Callable[[], _T]) -> _T:
        """Returns what ``action`` returns.

        Raises:
            ReadModelUnavailable, EventStoreUnavailable: still unavailable after the
                last retry.
            ProjectorStopped: stop was requested while waiting to retry.
        """
        retry = 0
        while True:
            try:
                return action()
            except (ReadModelUnavailable, EventStoreUnavailable) as error:
                ES_BULK_FAILURES.inc()
                if self._policy.gives_up_after(retry):
                    raise
                delay = self._policy.delay_seconds(retry, self._rng)
                retry += 1
                _logger.warning(
                    "%s failed (attempt %d of %d), retrying in %.2f s: %s",
                    what,
                    retry,
                    self._attempts_max,
                    delay,
                    error,
                )
                if self._stop.wait(delay):
                    raise ProjectorStopped(f"stopped while retrying {what}") from error
