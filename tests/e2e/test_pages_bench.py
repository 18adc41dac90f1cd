"""``python -m chronos_dev.bench.pages`` end to end on a small ledger: it writes the
ledger, rebuilds a read model from it, serves it through a query server and the
console, and every request a console page sends answers with the rows it should.
Timings are reported by the tool, never asserted here."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import Infrastructure
from tests.e2e.helpers import PROJECT_ROOT

TIMEOUT_SECONDS = 300
# Requests whose answer is empty on this ledger: nothing is newer than the head, and no
# account has a hold.
EMPTY = {"live tail poll (nothing new)", "holds"}


def test_every_console_request_answers_on_a_written_ledger(
    infrastructure: Infrastructure,
) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "chronos_dev.bench.pages",
            "--events",
            "3000",
            "--accounts",
            "40",
            "--samples",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [
        line.split(" | ")
        for line in completed.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| page")
    ]
    calls = {row[1].split(" (`")[0]: float(row[2]) for row in rows}
    assert len(calls) == 16, completed.stdout
    for call, mean_rows in calls.items():
        if call in EMPTY:
            assert mean_rows == 0, call
        else:
            assert mean_rows >= 1, call
    assert calls["newest page"] == 50 and calls["statement page"] == 20
    assert "3,000 events, 40 accounts" in completed.stdout
