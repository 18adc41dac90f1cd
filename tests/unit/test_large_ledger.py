"""The large ledger the page-speed tool writes is a consistent ledger: gapless positions
and stream versions, balances that follow the lines, and entries that balance."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from chronos.domain.commands import Side
from chronos.domain.events import AccountOpened, LinePosted
from chronos.event_store import mapper
from chronos_dev.bench.large_ledger import RowWriter, ledger_rows


def test_the_rows_make_a_consistent_ledger() -> None:
    writer = RowWriter(random.Random(3), datetime(2026, 1, 1, tzinfo=UTC), timedelta(seconds=2))
    ledger: dict[str, Any] = {}
    rows = list(ledger_rows(writer, 1001, 20, ledger))

    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == 1000  # 20 openings and 490 transfers; a half transfer is not written
    versions: dict[str, int] = defaultdict(int)
    balances: dict[str, int] = defaultdict(int)
    entries: dict[str, int] = defaultdict(int)
    for position, _, stream, version, event_type, schema, payload, _, recorded, _ in rows:
        versions[stream] += 1
        assert version == versions[stream]
        event = mapper.decode(event_type, schema, payload)
        if isinstance(event, AccountOpened):
            assert position <= 20
            continue
        assert isinstance(event, LinePosted)
        signed = event.amount_minor if event.side is Side.CREDIT else -event.amount_minor
        balances[stream] += signed
        entries[event.entry_id] += signed
        assert event.balance_after_minor == balances[stream]
        assert recorded >= rows[position - 2][8]
    assert set(entries.values()) == {0}
    assert sum(balances.values()) == 0
    assert sorted(ledger["accounts"]) == sorted(versions)
    assert set(ledger["entries"]) == set(entries)
