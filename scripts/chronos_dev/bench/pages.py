"""``python -m chronos_dev.bench.pages``: how fast the ledger console's pages answer on a
ledger of a million events.

1. A scratch database (the bench's naming, so ``./scripts/bench --remove-leftovers``
   finds it after a crash) is filled with a large ledger (:mod:`large_ledger`).
2. ``chronos projection rebuild`` builds a scratch read model from it; its rate is
   reported too.
3. The head is recorded as the read model's watermark, as the projector records it once
   it has projected that far (no projector runs: its only job here would be that line).
4. A query server and the console start on them, and every JSON endpoint the console's
   pages call is timed through the console, one request at a time, as one operator's
   browser sends them: ``--samples`` requests each, with accounts, entries, words and
   depths drawn at random.
5. Everything is removed (``--keep`` keeps the database and the indices).

Run on the running stack (or it starts one)::

    .venv/bin/python -m chronos_dev.bench.pages --events 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chronos.read_model.client import elasticsearch_client
from chronos.read_model.es_writer import EsWriter
from chronos.read_model.indices import IndexNames
from chronos.read_model.watermark import APPLIED, SEARCHABLE
from chronos_dev.bench import large_ledger
from chronos_dev.bench.resources import (
    acquire_stack,
    create_resources,
    release_stack,
    remove_resources,
)
from chronos_dev.bench.stages import run_rebuild
from chronos_dev.console import console_for
from chronos_dev.launcher import SERVER_MODULES, Services

EVENTS_DEFAULT = 1_000_000
ACCOUNTS_DEFAULT = 10_000
SAMPLES_DEFAULT = 30
START_SECONDS_MAX = 120.0
REQUEST_TIMEOUT_SECONDS = 30.0
# The console's page sizes (query_server/console/static/*.js).
EVENT_PAGE_SIZE = 50
TAIL_PAGE_SIZE = 200
STATEMENT_PAGE_SIZE = 20
CHART_LINES_MAX = 200
SEARCH_PAGE_SIZE = 50

# (page, call): the parameters of one request, drawn from the ledger with the random source.
_Draw = Callable[[random.Random, large_ledger.LargeLedger], dict[str, Any]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _some_day(rng: random.Random, ledger: large_ledger.LargeLedger) -> dict[str, Any]:
    span = ledger.last_recorded_at - ledger.first_recorded_at
    start = ledger.first_recorded_at + span * rng.random() * 0.9
    return {"start_time": _iso(start), "end_time": _iso(start + timedelta(days=1))}


# Every request the console's pages send, in the order a page sends them.
CALLS: tuple[tuple[str, str, str, _Draw], ...] = (
    ("status strip", "newest event", "ListEvents", lambda r, led: {"page_size": 1}),
    (
        "event log",
        "newest page",
        "ListEvents",
        lambda r, led: {"page_size": EVENT_PAGE_SIZE},
    ),
    (
        "event log",
        "an older page (Older events, anywhere in the log)",
        "ListEvents",
        lambda r, led: {
            "page_size": EVENT_PAGE_SIZE,
            "to_position": r.randint(EVENT_PAGE_SIZE, led.head_position),
        },
    ),
    (
        "event log",
        "live tail poll (nothing new)",
        "ListEvents",
        lambda r, led: {
            "page_size": TAIL_PAGE_SIZE,
            "from_position": led.head_position + 1,
            "order": "EVENT_ORDER_ASCENDING",
        },
    ),
    (
        "event log",
        "filter: event type",
        "ListEvents",
        lambda r, led: {"page_size": EVENT_PAGE_SIZE, "event_types": "FundsTransferred"},
    ),
    (
        "event log",
        "filter: account",
        "ListEvents",
        lambda r, led: {"page_size": EVENT_PAGE_SIZE, "account_id": r.choice(led.account_ids)},
    ),
    (
        "event log",
        "filter: entry",
        "ListEvents",
        lambda r, led: {"page_size": EVENT_PAGE_SIZE, "entry_id": r.choice(led.entry_ids)},
    ),
    (
        "event log",
        "filter: free text (one word)",
        "ListEvents",
        lambda r, led: {
            "page_size": EVENT_PAGE_SIZE,
            "text": r.choice(large_ledger.DESCRIPTION_WORDS),
        },
    ),
    (
        "event log",
        "filter: one day",
        "ListEvents",
        lambda r, led: {"page_size": EVENT_PAGE_SIZE, **_some_day(r, led)},
    ),
    (
        "account",
        "account",
        "GetAccount",
        lambda r, led: {"account_id": r.choice(led.account_ids)},
    ),
    (
        "account",
        "holds",
        "ListPendingTransfers",
        lambda r, led: {"account_id": r.choice(led.account_ids), "page_size": 50},
    ),
    (
        "account",
        "chart lines",
        "ListTransactions",
        lambda r, led: {"account_id": r.choice(led.account_ids), "page_size": CHART_LINES_MAX},
    ),
    (
        "account",
        "statement page",
        "ListTransactions",
        lambda r, led: {"account_id": r.choice(led.account_ids), "page_size": STATEMENT_PAGE_SIZE},
    ),
    (
        "account",
        "balance at an instant",
        "GetBalanceAt",
        lambda r, led: {
            "account_id": r.choice(led.account_ids),
            "at_time": _some_day(r, led)["end_time"],
        },
    ),
    ("entry", "entry", "GetEntry", lambda r, led: {"entry_id": r.choice(led.entry_ids)}),
    (
        "search",
        "owner name",
        "SearchAccounts",
        lambda r, led: {
            "query": r.choice(large_ledger.LAST_NAMES),
            "page_size": SEARCH_PAGE_SIZE,
        },
    ),
)


def time_calls(
    console_url: str, ledger: large_ledger.LargeLedger, samples: int
) -> list[dict[str, Any]]:
    """Times ``samples`` requests of every call; a refused request fails the run."""
    rng = random.Random(7)
    results = []
    for page, call, method, draw in CALLS:
        seconds = []
        rows = 0
        for _ in range(samples):
            query = urllib.parse.urlencode(draw(rng, ledger))
            started = time.perf_counter()
            with urllib.request.urlopen(
                f"{console_url}api/{method}?{query}", timeout=REQUEST_TIMEOUT_SECONDS
            ) as response:
                body = response.read()
            seconds.append(time.perf_counter() - started)
            # A refusal is an HTTPError above; an answer is JSON, and its rows are counted
            # (events, lines, holds, accounts), so that an empty answer cannot pass unseen.
            answer = json.loads(body)
            rows += max((len(v) for v in answer.values() if isinstance(v, list)), default=1)
        ordered = sorted(seconds)
        results.append(
            {
                "page": page,
                "call": call,
                "method": method,
                "p50_ms": round(statistics.median(ordered) * 1000, 1),
                "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 1),
                "max_ms": round(ordered[-1] * 1000, 1),
                "rows_mean": round(rows / samples, 1),
            }
        )
        print(f"pages: {page}: {call}: {results[-1]}", file=sys.stderr, flush=True)
    return results


def _record_watermarks(es_url: str, prefix: str, topic: str, head: int) -> None:
    es = elasticsearch_client(es_url)
    try:
        writer = EsWriter(es, IndexNames(prefix=prefix))
        for kind in (APPLIED, SEARCHABLE):
            writer.write_watermarks(topic, 1, {0: head}, kind=kind)
    finally:
        es.close()


def run(event_count: int, account_count: int, samples: int, *, keep: bool) -> dict[str, Any]:
    infrastructure = acquire_stack()
    resources = create_resources(infrastructure)
    try:
        started = time.monotonic()
        ledger = large_ledger.fill(
            resources.pg_dsn,
            event_count=event_count,
            account_count=account_count,
            now=datetime.now(UTC),
        )
        print(
            f"pages: wrote {ledger.head_position:,} events in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        rebuilt = run_rebuild(resources.pg_dsn, infrastructure.es_url, resources.index_prefix)
        print(f"pages: {rebuilt['output']}", file=sys.stderr, flush=True)
        _record_watermarks(
            infrastructure.es_url, resources.index_prefix, resources.topic, ledger.head_position
        )
        with tempfile.TemporaryDirectory(prefix="chronos-pages-") as scratch:
            directory = Path(scratch)
            services_set = Services(
                resources.backends(infrastructure), log_dir=directory, modules=SERVER_MODULES
            )
            with services_set as services:
                deadline = time.monotonic() + START_SECONDS_MAX
                with console_for(
                    services_set.environment(), services.query_addr, directory, deadline=deadline
                ) as url:
                    calls = time_calls(url, ledger, samples)
        return {
            "events": ledger.head_position,
            "accounts": account_count,
            "samples": samples,
            "rebuild_events_per_second": rebuilt["events_per_second"],
            "calls": calls,
        }
    finally:
        if not keep:
            remove_resources(infrastructure, resources)
        release_stack(infrastructure)


def _print_table(result: Mapping[str, Any]) -> None:
    print(
        f"{result['events']:,} events, {result['accounts']:,} accounts; rebuild "
        f"{result['rebuild_events_per_second']:,} events/s; {result['samples']} requests "
        "per call, one at a time, through the console"
    )
    print("| page | request | rows (mean) | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for call in result["calls"]:
        print(
            f"| {call['page']} | {call['call']} (`{call['method']}`) | {call['rows_mean']} | "
            f"{call['p50_ms']} | {call['p95_ms']} | {call['max_ms']} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chronos_dev.bench.pages", description=__doc__)
    parser.add_argument("--events", type=int, default=EVENTS_DEFAULT)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS_DEFAULT)
    parser.add_argument("--samples", type=int, default=SAMPLES_DEFAULT)
    parser.add_argument("--keep", action="store_true", help="keep the database and indices")
    args = parser.parse_args(argv)
    if not 2 <= args.accounts <= args.events or not 1 <= args.samples <= 1000:
        parser.error("need 2 <= --accounts <= --events and 1 <= --samples <= 1000")
    result = run(args.events, args.accounts, args.samples, keep=args.keep)
    _print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
