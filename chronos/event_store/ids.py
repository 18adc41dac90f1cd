"""Random ids for entries and events: version-4 UUIDs from a pooled OS source."""

from __future__ import annotations

import os


class _RandomPool:
    """Random bytes from the OS, fetched many ids' worth at a time.

    os.urandom releases the GIL; under load every release let another thread take it
    and the event loop waited to get it back (py-spy showed a visible share of the
    writer's wall time in random_uuid with one call per id). A forked child empties its
    copy of the pool, so that no two processes hand out the same bytes.
    """

    _CHUNK_BYTES = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._offset = b"", 0

    def take16_hex(self) -> str:
        if self._offset + 16 > len(self._pool):
            self._pool, self._offset = os.urandom(self._CHUNK_BYTES), 0
        start = self._offset
        self._offset = start + 16
        return self._pool[start : start + 16].hex()


_RANDOM = _RandomPool()


def random_uuid() -> str:
    """A random (version 4) UUID in canonical text form, like ``str(uuid.uuid4())`` at
    a fraction of the cost: two ids per event made uuid4 a visible share of the writer."""
    digits = _RANDOM.take16_hex()
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
