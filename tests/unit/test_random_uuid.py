"""random_uuid: canonical version-4 ids from a pooled OS source, never shared by forks."""

from __future__ import annotations

import os
import uuid

from chronos.event_store.ids import random_uuid


def test_ids_are_canonical_version_4_and_distinct_across_many_pool_refills() -> None:
    ids = [random_uuid() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_forked_child_does_not_repeat_the_parents_next_ids() -> None:
    random_uuid()  # the pool now holds bytes the child would inherit
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write_end, ",".join(random_uuid() for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = set(pipe.read().split(","))
    parent = {random_uuid() for _ in range(10)}
    assert len(child) == 10
    assert not child & parent
