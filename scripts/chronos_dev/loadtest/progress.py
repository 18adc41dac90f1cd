"""The progress of a phase: counters in shared memory and a line rewritten on stderr."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chronos_dev.loadtest.runner import PhasePlan


class ProgressCounters:
    """Operations and failed operations per process, in shared memory.

    Each process writes only its own two slots and the reader tolerates a torn read
    of a moment ago, so no lock is needed.
    """

    def __init__(self, array: Any) -> None:
        self._array = array

    def update(self, worker_index: int, operations: int, failures: int) -> None:
        self._array[2 * worker_index] = operations
        self._array[2 * worker_index + 1] = failures

    def totals(self) -> tuple[int, int]:
        values = list(self._array)
        return sum(values[0::2]), sum(values[1::2])


class ProgressLine:
    """A ``\\r``-rewritten status line on stderr: elapsed, operations, rate, failures."""

    def __init__(self, label: str, counters: ProgressCounters, plan: PhasePlan, interval: float):
        self._label = label
        self._counters = counters
        self._plan = plan
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadtest-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ProgressLine:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def mark_started(self) -> None:
        """Counts elapsed time from now (client processes take a moment to start)."""
        self._started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._print(final=True)

    def _run(self) -> None:
        previous_operations, previous_time = 0, time.monotonic()
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            operations, _ = self._counters.totals()
            rate = (operations - previous_operations) / max(1e-9, now - previous_time)
            previous_operations, previous_time = operations, now
            self._print(rate_per_second=rate)

    def _print(self, *, rate_per_second: float | None = None, final: bool = False) -> None:
        elapsed = time.monotonic() - self._started
        operations, failures = self._counters.totals()
        if rate_per_second is None:
            rate_per_second = operations / elapsed if elapsed > 0 else 0.0
        bound = ""
        if self._plan.duration_seconds is not None:
            bound = f"/{self._plan.duration_seconds:.0f}"
        total = f"/{self._plan.count_total}" if self._plan.count_total is not None else ""
        line = (
            f"\r[{self._label}] {elapsed:6.1f}{bound} s  ops {operations}{total}  "
            f"rate {rate_per_second:8.1f}/s  failed {failures}   "
        )
        sys.stderr.write(line + ("\n" if final else ""))
        sys.stderr.flush()
