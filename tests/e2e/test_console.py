"""The ledger console in a real browser (the distribution's headless Chromium through
Playwright) against the four real services, secured: the console reads through a query
server of its own with a ``ledger:read`` token. Every number the pages show is compared
with the query API's own answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from elasticsearch import Elasticsearch
from google.protobuf import timestamp_pb2

from chronos.security import scopes
from chronos.v1 import commands_pb2
from tests.e2e.console_support import (
    CALL_TIMEOUT_SECONDS,
    TRACE_TEMPLATE,
    Console,
    chromium_page,
    require_chromium,
    running_console,
    unique_name,
)
from tests.e2e.helpers import free_port
from tests.e2e.secured_pipeline import secured_pipeline
from tests.integration.authorization_support import eur, new_id, refusal_of

pytestmark = pytest.mark.e2e
SHOWN_MS = 10_000


@pytest.fixture(scope="module")
def console(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Console]:
    require_chromium()
    with (
        secured_pipeline(
            pg_dsn, kafka_bootstrap, es_url, es_client, tmp_path_factory, "console"
        ) as pipeline,
        running_console(pipeline, es_url, tmp_path_factory.mktemp("console")) as running,
    ):
        yield running


@pytest.fixture(scope="module")
def page(console: Console) -> Iterator[Any]:
    with chromium_page() as opened:
        yield opened


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def shown_positions(page: Any) -> list[int]:
    return [
        int(position)
        for position in page.eval_on_selector_all(
            "[data-testid=event]", "rows => rows.map(row => row.dataset.position)"
        )
    ]


def wait_for_positions(page: Any, want: list[int]) -> None:
    """Waits until the event log shows exactly ``want`` (newest first)."""
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('[data-testid=event]')]"
        ".map(row => Number(row.dataset.position))) === JSON.stringify(want)",
        arg=want,
        timeout=SHOWN_MS,
    )
    assert shown_positions(page) == want


def minor(page: Any, testid: str) -> int:
    return int(page.get_attribute(f"[data-testid={testid}]", "data-minor"))


def local_text(timestamp: timestamp_pb2.Timestamp) -> str:
    """A datetime-local value (the browser runs in UTC) to the millisecond."""
    moment = timestamp.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def test_the_event_log_shows_a_transfer_live_and_each_filter_narrows_it(
    console: Console, page: Any
) -> None:
    a, b = console.open(1_000), console.open(0)
    page.goto(console.url + "#/events")
    page.locator("[data-testid=event]").first.wait_for(timeout=SHOWN_MS)
    page.evaluate("window.notReloaded = true")
    word, request_id = unique_name("invoice"), new_id()
    # Another caller than the one that opened the accounts, so the principal filter narrows.
    other = console.pipeline.tokens.caller(scopes.FUNDS_WRITE)
    transfer = console.transfer(
        a, b, 250, caller=other, description=f"for {word}", request_id=request_id
    )

    rows = page.locator(f"[data-testid=event]:has-text('{request_id}')")
    expect()(rows).to_have_count(2, timeout=SHOWN_MS)
    assert page.evaluate("window.notReloaded") is True

    everything = console.query("ListEvents", page_size=50, min_position=transfer.position)
    wait_for_positions(page, [event.position for event in everything.events])
    ours = console.query("ListEvents", request_id=request_id)
    principal = ours.events[0].metadata["principal"]
    # A millisecond window around the transfer (both its events share one instant).
    moment = ours.events[0].recorded_at.ToDatetime(tzinfo=UTC)
    start, end = (timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp())
    start.FromDatetime(moment.replace(microsecond=moment.microsecond // 1000 * 1000))
    end.FromMilliseconds(start.ToMilliseconds() + 1)
    filters: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({"event_types": "FundsTransferred"}, {"event_types": ["FundsTransferred"]}),
        ({"account_id": b}, {"account_id": b}),
        ({"entry_id": transfer.entry_id}, {"entry_id": transfer.entry_id}),
        ({"request_id": request_id}, {"request_id": request_id}),
        ({"principal": principal}, {"principal": principal}),
        ({"text": word}, {"text": word}),
        (
            {"start_time": local_text(start), "end_time": local_text(end)},
            {"start_time": start, "end_time": end},
        ),
    ]
    for parameters, request in filters:
        want = [event.position for event in console.query("ListEvents", **request).events]
        assert want and len(want) < len(everything.events), parameters
        page.goto(console.url + "#/events?" + urllib.parse.urlencode(parameters))
        wait_for_positions(page, want)
    assert shown_positions(page) and set(shown_positions(page)) >= {
        event.position for event in ours.events
    }

    # The form sets the same filter as the address does.
    page.goto(console.url + "#/events")
    page.fill("[data-testid=filter-account_id]", b)
    page.click("text=Apply")
    wanted = [e.position for e in console.query("ListEvents", account_id=b).events]
    wait_for_positions(page, wanted)
    assert f"account_id={b}" in page.url


def test_a_row_expands_to_its_metadata_and_payload_with_links(console: Console, page: Any) -> None:
    a, b = console.open(500), console.open(0)
    # Text from a client is shown as text, never as markup.
    markup = "<img src=x onerror=window.injected=1><b>bold</b>"
    transfer = console.transfer(a, b, 125, description=markup)
    event = console.query("ListEvents", entry_id=transfer.entry_id, min_position=transfer.position)
    newest = event.events[0]
    page.goto(console.url + f"#/events?entry_id={transfer.entry_id}")
    row = page.locator(f"[data-testid=event][data-position='{newest.position}']")
    row.locator("td").first.click()
    details = page.locator("[data-testid=details]")
    expect()(details).to_be_visible()
    expect()(details.locator(f"a[href='#/entry/{transfer.entry_id}']").first).to_be_visible()
    expect()(details.locator(f"a[href='#/account/{newest.stream_id}']").first).to_be_visible()
    assert json.loads(newest.payload_json)["line"]["entry_id"] in details.inner_text()
    traceparent = newest.metadata.get("traceparent", "")
    if traceparent:
        trace_id = traceparent.split("-")[1]
        href = row.locator("[data-testid=trace]").get_attribute("href")
        assert href == TRACE_TEMPLATE.replace("{trace_id}", trace_id)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    details.locator("[data-testid=copy]").click()
    assert markup in details.inner_text()
    assert details.locator("b, img").count() == 0 and page.evaluate("window.injected") is None
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    assert copied["event_id"] == newest.event_id
    assert copied["payload"] == json.loads(newest.payload_json)


def test_the_account_page_equals_get_account_and_pages_its_statement(
    console: Console, page: Any
) -> None:
    owner = unique_name("Ada ")
    a, b = console.open(100_000, owner=owner), console.open(0)
    for index in range(22):
        last = console.transfer(a, b, 100 + index)
    hold = console.pipeline.commands.CreatePendingTransfer(
        commands_pb2.CreatePendingTransferRequest(
            request_id=new_id(), from_account_id=a, to_account_id=b, amount=eur(300)
        ),
        metadata=console.writer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert hold.position > last.position
    account = console.query("GetAccount", account_id=a, min_position=hold.position)

    page.goto(console.url + f"#/account/{a}")
    expect()(page.locator("[data-testid=owner]")).to_have_text(owner, timeout=SHOWN_MS)
    assert page.inner_text("[data-testid=currency]") == account.currency
    assert page.inner_text("[data-testid=account-status]") == "active"
    assert minor(page, "balance") == account.balance.minor_units
    assert minor(page, "pending-debits") == account.pending_debits.minor_units == 300
    assert minor(page, "pending-credits") == account.pending_credits.minor_units
    assert minor(page, "available") == account.available.minor_units
    assert minor(page, "overdraft-limit") == account.overdraft_limit_minor
    expect()(page.locator("[data-testid=hold]")).to_have_count(1)
    assert page.locator("[data-testid=chart] polyline").count() == 1

    first = console.query("ListTransactions", account_id=a, page_size=20)
    second = console.query(
        "ListTransactions", account_id=a, page_size=20, page_token=first.next_page_token
    )
    for answer in (first, second):
        if answer is second:
            page.click("[data-testid=older-page]")
        expect()(page.locator("[data-testid=line]")).to_have_count(len(answer.lines))
        shown = page.eval_on_selector_all(
            "[data-testid=line] [data-testid=line-balance]",
            "cells => cells.map(c => c.dataset.minor)",
        )
        assert [int(value) for value in shown] == [
            line.balance_after.minor_units for line in answer.lines
        ]
    # More lines than one page holds, fewer than two.
    assert len(first.lines) == 20 and second.lines and not second.next_page_token
    expect()(page.locator("[data-testid=older-page]")).to_be_disabled()
    page.click("[data-testid=newer-page]")
    expect()(page.locator("[data-testid=page-number]")).to_have_text("page 1")

    # Balance at an instant between the transfers.
    middle = first.lines[10]
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(middle.recorded_at.ToDatetime(tzinfo=UTC) + timedelta(milliseconds=1))
    page.fill("[data-testid=at-time]", local_text(at))
    page.click("text=Show")
    at_ms = timestamp_pb2.Timestamp()
    at_ms.FromMilliseconds(at.ToMilliseconds())
    then = console.query("GetBalanceAt", account_id=a, at_time=at_ms)
    expect()(page.locator("[data-testid=at-balance]")).to_be_visible()
    assert minor(page, "at-balance") == then.balance.minor_units
    assert minor(page, "at-available") == then.available.minor_units
    assert int(page.inner_text("[data-testid=at-line-position]")) == then.line_position
    assert then.balance.minor_units != account.balance.minor_units

    page.goto(console.url + "#/search?" + urllib.parse.urlencode({"query": owner}))
    expect()(page.locator("[data-testid=account]")).to_have_count(1, timeout=SHOWN_MS)
    expect()(page.locator(f"[data-testid=account] a[href='#/account/{a}']")).to_be_visible()
    for narrower in ({"currency": "USD"}, {"status": "ACCOUNT_STATUS_FROZEN"}):
        search = {"query": owner, **narrower}
        assert not console.query("SearchAccounts", **search).accounts
        page.goto(console.url + "#/search?" + urllib.parse.urlencode(search))
        expect()(page.locator("[data-testid=total-hits]")).to_have_text("0 accounts")
        expect()(page.locator("[data-testid=account]")).to_have_count(0)
    page.goto(console.url + "#/search")
    page.fill("[data-testid=search-query]", owner)
    page.select_option("[data-testid=search-status]", "ACCOUNT_STATUS_ACTIVE")
    page.fill("[data-testid=search-currency]", "EUR")
    page.click("text=Search")
    expect()(page.locator("[data-testid=account]")).to_have_count(1, timeout=SHOWN_MS)


def test_the_event_log_pages_back(console: Console, page: Any) -> None:
    # The tests before this one wrote more events than a page holds.
    first = console.query("ListEvents", page_size=50)
    assert first.next_page_token
    second = console.query("ListEvents", page_size=50, page_token=first.next_page_token)
    page.goto(console.url + "#/events")
    wait_for_positions(page, [event.position for event in first.events])
    page.click("[data-testid=older]")
    wait_for_positions(page, [event.position for event in (*first.events, *second.events)])


def test_the_entry_page_equals_get_entry_and_links_its_reversal(
    console: Console, page: Any
) -> None:
    a, b = console.open(1_000), console.open(0)
    transfer = console.transfer(a, b, 700, description="rent")
    reversal = console.pipeline.commands.ReverseEntry(
        commands_pb2.ReverseEntryRequest(
            request_id=new_id(), entry_id=transfer.entry_id, reason="sent twice"
        ),
        metadata=console.writer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    entry = console.query("GetEntry", entry_id=transfer.entry_id, min_position=reversal.position)

    page.goto(console.url + f"#/entry/{transfer.entry_id}")
    expect()(page.locator("[data-testid=entry-state]")).to_have_text("reversed", timeout=SHOWN_MS)
    rows = page.locator("[data-testid=entry-line]")
    expect()(rows).to_have_count(len(entry.lines))
    for index, line in enumerate(entry.lines):
        row = rows.nth(index)
        assert line.account_id in row.inner_text()
        side = {1: "debit", 2: "credit"}.get(line.side)
        assert row.locator("[data-testid=side]").inner_text() in (side, f"side_{line.side}")
        assert int(row.locator("[data-testid=amount]").get_attribute("data-minor")) == (
            line.amount.minor_units
        )
        assert int(row.locator("[data-testid=balance-after]").get_attribute("data-minor")) == (
            line.balance_after.minor_units
        )
    expect()(page.locator("[data-testid=entry-event]")).to_have_count(len(entry.events))
    assert page.inner_text("[data-testid=description]") == entry.description
    page.click(f"[data-testid=reversed-by] a[href='#/entry/{entry.reversed_by_entry_id}']")
    expect()(
        page.locator(f"[data-testid=reverses] a[href='#/entry/{transfer.entry_id}']")
    ).to_be_visible(timeout=SHOWN_MS)


def http_get(url: str, method: str = "GET", host: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body.startswith(b"{") else body


def test_a_bad_id_or_date_shows_the_servers_message(console: Console, page: Any) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as refused:
        console.query("GetAccount", account_id=unknown)
    code, reason, _, message = refusal_of(refused.value)
    assert code == grpc.StatusCode.NOT_FOUND
    page.goto(console.url + f"#/account/{unknown}")
    expect()(page.locator("[data-testid=error]")).to_have_text(
        f"{reason}: {message}", timeout=SHOWN_MS
    )

    status, body = http_get(console.url + f"api/GetAccount?account_id={unknown}")
    assert (status, body["error"]["reason"], body["error"]["message"]) == (404, reason, message)

    page.goto(console.url + "#/events?start_time=yesterday")
    expect()(page.locator("[data-testid=error]")).to_contain_text("start_time", timeout=SHOWN_MS)
    status, body = http_get(console.url + "api/ListEvents?start_time=yesterday")
    assert status == 400 and body["error"]["reason"] == "BAD_QUERY_PARAMETER"
    assert "start_time" in body["error"]["message"] and "Traceback" not in body["error"]["message"]

    assert http_get(console.url + "api/GetAccount", method="POST")[0] == 405
    assert http_get(console.url + "api/GetAccount", method="DELETE")[0] == 405
    assert http_get(console.url + "api/ListEvents", host="evil.example:80")[0] == 421
    assert http_get(console.url + "api/Withdraw")[0] == 404


def event_log_banner(console: Console, page: Any) -> Any:
    """The banner of the event log, once the log has loaded."""
    page.goto(console.url + "#/events")
    page.locator("[data-testid=event]").first.wait_for(timeout=SHOWN_MS)
    return page.locator("#banner")


def test_the_banner_shows_while_the_read_side_is_down_and_goes_by_itself(
    console: Console, page: Any
) -> None:
    banner = event_log_banner(console, page)
    expect()(banner).to_be_hidden()

    console.read_server.stop()
    expect()(banner).to_be_visible(timeout=SHOWN_MS)
    # Up again, but with its Elasticsearch unreachable: the query server answers, with an
    # error, and the banner stays.
    console.read_server.start(es_url=f"https://127.0.0.1:{free_port()}")
    expect()(banner).to_contain_text("read side is unavailable", timeout=SHOWN_MS)
    page.wait_for_timeout(2500)
    expect()(banner).to_be_visible()

    console.read_server.stop()
    console.read_server.start()
    expect()(banner).to_be_hidden(timeout=SHOWN_MS)
    a, b = console.open(100), console.open(0)
    request_id = new_id()
    console.transfer(a, b, 10, request_id=request_id)
    rows = page.locator(f"[data-testid=event]:has-text('{request_id}')")
    expect()(rows).to_have_count(2, timeout=SHOWN_MS)


def test_a_refused_token_shows_the_banner_until_the_file_is_renewed(
    console: Console, page: Any
) -> None:
    banner = event_log_banner(console, page)
    good = console.token_file.read_text()
    try:
        # A token with a scope that reads nothing: the console's own misconfiguration.
        writer_only = console.pipeline.tokens.caller(scopes.ACCOUNTS_WRITE)[0][1]
        console.token_file.write_text(writer_only.removeprefix("Bearer "))
        expect()(banner).to_contain_text("refused the console's token", timeout=SHOWN_MS)
        assert "eyJ" not in banner.inner_text()
    finally:
        console.token_file.write_text(good)
    expect()(banner).to_be_hidden(timeout=SHOWN_MS)
