"""A per-principal rate limit: one token bucket per subject, in one server process."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Buckets one process keeps; the least recently seen subject's is dropped beyond it.
# A dropped bucket starts full again, which only ever lets a caller through.
BUCKETS_MAX = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    """Lets each subject make ``rate_per_second`` calls per second, ``burst`` at once."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        buckets_max: int = BUCKETS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert rate_per_second > 0 and burst >= 1 and buckets_max >= 1
        self._rate_per_second = rate_per_second
        self._burst = float(burst)
        self._buckets_max = buckets_max
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def admit(self, subject: str) -> bool:
        """Takes one call from ``subject``'s bucket; False when it is empty."""
        now = self._clock()
        bucket = self._buckets.get(subject)
        if bucket is None:
            if len(self._buckets) >= self._buckets_max:
                self._buckets.popitem(last=False)
            bucket = self._buckets[subject] = _Bucket(self._burst, now)
        else:
            self._buckets.move_to_end(subject)
            elapsed = max(0.0, now - bucket.updated_at)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate_per_second)
            bucket.updated_at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
