"""The background thread that makes applied batches searchable (refresh mode
``interval``), so that a refresh never holds up the next bulk."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from chronos.errors import ChronosError

_logger = logging.getLogger(__name__)

# How long close() waits for a refresh in progress to end.
_JOIN_TIMEOUT_SECONDS = 30.0


class SearchRefresher:
    """Calls ``make_searchable`` every ``interval_seconds``, or sooner when woken (the
    main loop found nothing to apply), but never more than once per interval.

    Args:
        make_searchable: Refreshes the indices and advances the searchable watermarks.
        interval_seconds: The shortest time between two calls.
    """

    def __init__(self, make_searchable: Callable[[], None], interval_seconds: float) -> None:
        self._make_searchable = make_searchable
        self._interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the thread (a daemon: it holds no state a crash could lose)."""
        assert self._thread is None, "started once"
        self._thread = threading.Thread(target=self._run, name="search-refresher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Asks for a refresh now rather than at the next tick."""
        self._wanted.set()

    def stop(self) -> None:
        """Stops the thread (bounded wait for a refresh in progress)."""
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT_SECONDS)

    def _run(self) -> None:
        interval = self._interval_seconds
        while not self._stop.is_set():
            self._wanted.wait(interval)
            self._wanted.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self._make_searchable()
            except ChronosError as error:
                # The next tick retries; searches wait (PROJECTION_BEHIND) meanwhile.
                _logger.warning("making the projection searchable failed: %s", error)
            # At most one refresh per interval, idle or not: each refresh writes a new
            # segment that Elasticsearch must later merge.
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
