"""Regenerates the console's screenshots in docs/console/ (``scripts/console-screenshots``).

On the local stack it starts an isolated set of the four services and the console, seeds
a small ledger (accounts, deposits, transfers with metadata, a hold and a reversal),
and photographs the event log (one row expanded), an account and a reversed entry with
the distribution's headless Chromium at 1280×800. Everything it created is removed
afterwards.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from chronos.v1 import commands_pb2, commands_pb2_grpc, ledger_pb2, queries_pb2, queries_pb2_grpc
from chronos_dev import browser
from chronos_dev.bench.resources import (
    Infrastructure,
    acquire_stack,
    create_resources,
    release_stack,
    remove_resources,
)
from chronos_dev.client import channel
from chronos_dev.console import console_for
from chronos_dev.launcher import PROJECT_ROOT, Services

OUTPUT_DIR = PROJECT_ROOT / "docs" / "console"
TRACE_TEMPLATE = "http://127.0.0.1:16686/trace/{trace_id}"
CALL_TIMEOUT_SECONDS = 15.0
START_SECONDS_MAX = 120.0


def _eur(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency="EUR", minor_units=minor)


def _id() -> str:
    return str(uuid.uuid4())


def seed(commands: Any) -> dict[str, str]:
    """A small ledger worth looking at; returns the ids the screenshots show."""

    def call(method: str, request: Any) -> Any:
        return getattr(commands, method)(request, timeout=CALL_TIMEOUT_SECONDS)

    def transfer(source: str, target: str, minor: int, description: str, **labels: str) -> Any:
        request = commands_pb2.TransferFundsRequest(
            request_id=_id(),
            from_account_id=ids[source],
            to_account_id=ids[target],
            amount=_eur(minor),
            description=description,
            metadata=labels,
        )
        return call("TransferFunds", request)

    owners = {"ada": "Ada Lovelace", "grace": "Grace Hopper", "shop": "Analytical Engines Ltd"}
    ids = {key: _id() for key in owners}
    for key, owner in owners.items():
        call(
            "OpenAccount",
            commands_pb2.OpenAccountRequest(
                request_id=_id(), account_id=ids[key], owner_name=owner, currency="EUR"
            ),
        )
    for key, minor in (("ada", 250_000), ("grace", 80_000)):
        call(
            "Deposit",
            commands_pb2.DepositRequest(request_id=_id(), account_id=ids[key], amount=_eur(minor)),
        )
    for number, minor in enumerate((12_500, 4_990, 31_000, 2_750, 18_200), start=101):
        transfer("ada", "shop", minor, f"invoice 2026-{number}", invoice=f"2026-{number}")
    transfer("grace", "ada", 15_000, "rent share")
    hold = commands_pb2.CreatePendingTransferRequest(
        request_id=_id(),
        from_account_id=ids["ada"],
        to_account_id=ids["shop"],
        amount=_eur(9_900),
        description="card authorisation",
        timeout_seconds=86_400,
    )
    call("CreatePendingTransfer", hold)
    twice = transfer("ada", "shop", 18_200, "invoice 2026-105 (sent twice)")
    reverse = commands_pb2.ReverseEntryRequest(
        request_id=_id(), entry_id=twice.entry_id, reason="duplicate payment"
    )
    reversal = call("ReverseEntry", reverse)
    return {**ids, "entry": twice.entry_id, "position": str(reversal.position)}


def photograph(url: str, ids: dict[str, str], output: Path) -> None:
    """The three screenshots, each once its page has loaded."""
    from playwright.sync_api import sync_playwright

    output.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            page = chromium.new_context(viewport=browser.VIEWPORT, timezone_id="UTC").new_page()
            page.goto(url + "#/events")
            rows = page.locator("[data-testid=event]")
            rows.nth(3).wait_for()
            rows.nth(3).locator("td").first.click()
            page.wait_for_timeout(1200)
            page.screenshot(path=str(output / "event-log.png"))
            page.goto(url + f"#/account/{ids['ada']}")
            page.locator("[data-testid=line]").first.wait_for()
            page.screenshot(path=str(output / "account.png"), full_page=False)
            page.goto(url + f"#/entry/{ids['entry']}")
            page.locator("[data-testid=entry-line]").first.wait_for()
            page.screenshot(path=str(output / "entry.png"))
        finally:
            chromium.close()


def _seed_and_photograph(services_set: Services, directory: Path) -> None:
    with services_set as services:
        commands = commands_pb2_grpc.CommandServiceStub(  # type: ignore[no-untyped-call]
            channel(services.command_addr, security_=services.security)
        )
        ids = seed(commands)
        queries = queries_pb2_grpc.QueryServiceStub(  # type: ignore[no-untyped-call]
            channel(services.query_addr, security_=services.security)
        )
        # Waits until the read side has applied the last write.
        queries.GetEntry(
            queries_pb2.GetEntryRequest(entry_id=ids["entry"], min_position=int(ids["position"])),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        environment = {
            **services_set.environment(),
            "CHRONOS_CONSOLE_TRACE_URL_TEMPLATE": TRACE_TEMPLATE,
        }
        deadline = time.monotonic() + START_SECONDS_MAX
        with console_for(environment, services.query_addr, directory, deadline=deadline) as url:
            photograph(url, ids, OUTPUT_DIR)


def _infrastructure() -> Infrastructure:
    """The servers the environment names (as after ``eval "$(chronos-dev infra env)"``),
    else the local stack, started when it is down."""
    names = ("CHRONOS_PG_DSN", "CHRONOS_KAFKA_BOOTSTRAP", "CHRONOS_ES_URL")
    if all(os.environ.get(name) for name in names):
        pg_dsn, kafka, es_url = (os.environ[name] for name in names)
        return Infrastructure(pg_server_dsn=pg_dsn, kafka_bootstrap=kafka, es_url=es_url)
    return acquire_stack()


def main() -> int:
    missing = browser.chromium_missing()
    if missing is not None:
        print(f"console-screenshots: {missing}", file=sys.stderr)
        return 1
    infrastructure = _infrastructure()
    resources = create_resources(infrastructure)
    try:
        with tempfile.TemporaryDirectory(prefix="chronos-screens-") as scratch:
            directory = Path(scratch)
            services_set = Services(resources.backends(infrastructure), log_dir=directory)
            _seed_and_photograph(services_set, directory)
    finally:
        remove_resources(infrastructure, resources)
        release_stack(infrastructure)
    written = sorted(path.name for path in OUTPUT_DIR.glob("*.png"))
    print(f"console-screenshots: wrote {', '.join(written)} in {OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
