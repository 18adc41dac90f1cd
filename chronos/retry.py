"""The one retry policy: capped exponential backoff with jitter.

Every loop that retries a transient failure (the writer's transactions, the outbox
poller's Kafka and PostgreSQL sessions, the projector's Elasticsearch and event-store
calls) takes its waits from a :class:`Backoff`, so that they all grow, cap and spread the
same way. The loops keep their own sleeping (``asyncio.sleep``, ``threading.Event.wait``)
because each must stay interruptible in its own way; only the arithmetic is shared.

Jitter is "equal jitter": a wait is drawn uniformly from the upper half of the current
step, so that processes that failed together do not retry together, while no wait is
ever close to zero (a zero wait would turn an outage into a busy loop).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How long to wait before each retry, and how many retries a call gets.

    Attributes:
        base_seconds: The step before the first retry; each later step doubles it.
        cap_seconds: No step is longer than this.
        retries_max: Retries of one call after its first attempt (``None``: the loop
            retries for as long as its process runs, e.g. a relay waiting for Kafka).
    """

    base_seconds: float = 0.05
    cap_seconds: float
    retries_max: int | None = None

    def __post_init__(self) -> None:
        assert 0 < self.base_seconds <= self.cap_seconds, "0 < base <= cap"
        assert self.retries_max is None or self.retries_max >= 0

    def step_seconds(self, retry: int) -> float:
        """The upper bound of the wait before retry number ``retry`` (0 for the first)."""
        assert retry >= 0
        # The exponent is bounded first, so a long outage's retry count overflows nothing.
        return min(self.cap_seconds, self.base_seconds * float(2 ** min(retry, 64)))

    def delay_seconds(self, retry: int, rng: random.Random | None = None) -> float:
        """A jittered wait before retry number ``retry``: uniform in [step/2, step]."""
        step = self.step_seconds(retry)
        return (rng or _RANDOM).uniform(step / 2, step)

    def gives_up_after(self, retry: int) -> bool:
        """Whether a call that has already been retried ``retry`` times must now fail."""
        return self.retries_max is not None and retry >= self.retries_max

    def waits(self, rng: random.Random | None = None) -> BackoffWaits:
        """The waits of one long-running loop, reset by :meth:`BackoffWaits.reset`."""
        return BackoffWaits(self, rng or _RANDOM)


@dataclass(slots=True)
class BackoffWaits:
    """The successive waits of one loop: each failure lengthens the next wait, up to the
    cap; a success resets it to the first step."""

    policy: Backoff
    rng: random.Random
    retries: int = field(default=0)

    def next_seconds(self) -> float:
        delay = self.policy.delay_seconds(self.retries, self.rng)
        self.retries += 1
        return delay

    def reset(self) -> None:
        self.retries = 0


_RANDOM = random.Random()
