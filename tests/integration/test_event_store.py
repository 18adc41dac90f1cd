"""The write path against a real PostgreSQL: rules, idempotency, concurrency, immutability."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest

from chronos.audit.verify import verify_chain
from chronos.domain.commands import (
    Deposit,
    OpenAccount,
    TransferFunds,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import LinePosted
from chronos.domain.ledger import system_account_id
from chronos.errors import ChronosError
from chronos.event_store import mapper
from chronos.event_store.migrate import migrate
from chronos.event_store.reader import iter_events
from chronos.event_store.results import CommandResult
from chronos.event_store.writer import (
    NOTIFY_CHANNEL,
    LedgerWriter,
    StoreFailure,
    StoreUnavailable,
    WriterSettings,
    writer_pool,
)
from tests.integration.writer_helpers import (
    eur,
    new_id,
    open_funded,
    prepared,
    run,
    run_expiry_job,
    with_writers,
)


def test_events_cannot_be_updated_deleted_or_truncated(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> None:
        await open_funded(writers[0], 100)

    asyncio.run(with_writers(ledger_dsn, body))
    for statement in (
        "UPDATE events SET event_type = 'Tampered'",
        "DELETE FROM events",
        "TRUNCATE events",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="events are immutable"):
            ledger_conn.execute(statement)
    count = ledger_conn.execute("SELECT count(*) FROM events").fetchone()
    assert count is not None and count[0] >= 3


def test_one_transaction_writes_events_outbox_state_and_idempotency(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> tuple[str, CommandResult]:
        account = await open_funded(writers[0], 0)
        result = await run(
            writers[0], Deposit(request_id="deposit-1", account_id=account, amount=eur(250))
        )
        return account, result

    account, result = asyncio.run(with_writers(ledger_dsn, body))
    assert result.balances and {b.account_id for b in result.balances} == {
        account,
        system_account_id("EUR"),
    }
    rows = ledger_conn.execute(
        """SELECT e.position, e.stream_id::text, e.event_type, e.metadata->>'request_id',
                  o.key, o.headers->>'schema', o.headers->>'position'
           FROM events e JOIN outbox o USING (position)
           WHERE e.event_id = ANY(%s::uuid[]) ORDER BY e.position""",
        (list(result.event_ids),),
    ).fetchall()
    assert len(rows) == len(result.event_ids)
    for position, stream_id, event_type, request_id, key, schema, header_position in rows:
        assert request_id == "deposit-1"
        assert key == stream_id
        assert schema == f"chronos.v1.{event_type}"
        assert int(header_position) == position
    assert rows[-1][0] == result.position
    state = ledger_conn.execute(
        "SELECT balance_minor, version FROM accounts WHERE account_id = %s", (account,)
    ).fetchone()
    assert state == (250, 2)
    stored = ledger_conn.execute(
        "SELECT response->>'position' FROM idempotency WHERE request_id = 'deposit-1'"
    ).fetchone()
    assert stored is not None and int(stored[0]) == result.position


def test_replay_returns_the_original_answer_and_writes_nothing(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> tuple[CommandResult, CommandResult, int, int]:
        account = await open_funded(writers[0], 1000)
        command = Withdraw(request_id="w-replay", account_id=account, amount=eur(100))
        first = await run(writers[0], command)
        before = ledger_conn.execute("SELECT count(*) FROM events").fetchone()
        again = await run(writers[0], command)
        after = ledger_conn.execute("SELECT count(*) FROM events").fetchone()
        assert before is not None and after is not None
        return first, again, before[0], after[0]

    first, again, before, after = asyncio.run(with_writers(ledger_dsn, body))
    assert not first.replayed and again.replayed
    assert (again.position, again.entry_id, again.balances, again.event_ids) == (
        first.position,
        first.entry_id,
        first.balances,
        first.event_ids,
    )
    assert before == after


def test_same_request_id_with_another_payload_is_refused(ledger_dsn: str) -> None:
    async def body(writers: list[LedgerWriter]) -> Rejection:
        account = await open_funded(writers[0], 1000)
        await run(writers[0], Withdraw(request_id="w-reuse", account_id=account, amount=eur(1)))
        with pytest.raises(Rejection) as caught:
            await run(writers[0], Withdraw(request_id="w-reuse", account_id=account, amount=eur(2)))
        return caught.value

    rejection = asyncio.run(with_writers(ledger_dsn, body))
    assert rejection.reason is Reason.IDEMPOTENCY_KEY_REUSED


def test_rejected_command_writes_nothing_and_can_be_retried(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> CommandResult:
        account = await open_funded(writers[0], 0)
        events_before = ledger_conn.execute("SELECT count(*) FROM events").fetchone()
        command = Withdraw(request_id="w-retry", account_id=account, amount=eur(50))
        with pytest.raises(Rejection) as caught:
            await run(writers[0], command)
        assert caught.value.reason is Reason.INSUFFICIENT_FUNDS
        assert ledger_conn.execute("SELECT count(*) FROM events").fetchone() == events_before
        assert ledger_conn.execute(
            "SELECT count(*) FROM idempotency WHERE request_id = 'w-retry'"
        ).fetchone() == (0,)
        await run(writers[0], Deposit(request_id=new_id(), account_id=account, amount=eur(50)))
        return await run(writers[0], command)

    result = asyncio.run(with_writers(ledger_dsn, body))
    assert not result.replayed
    assert [
        b.balance_minor for b in result.balances if b.account_id != system_account_id("EUR")
    ] == [0]


def test_a_command_whose_caller_gave_up_before_its_turn_is_not_run(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    first_id, abandoned_id, after_id = (f"{name}-{new_id()}" for name in ("first", "gone", "after"))

    async def body(writers: list[LedgerWriter]) -> CommandResult:
        writer = writers[0]
        account = await open_funded(writer, 100)
        # Another session holds the account's lock, so the lane's next transaction waits
        # on it, and what is queued behind that transaction waits for the lane.
        with psycopg.connect(ledger_dsn) as blocker:
            blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (account,))
            first = asyncio.create_task(
                run(writer, Deposit(request_id=first_id, account_id=account, amount=eur(1)))
            )
            await asyncio.sleep(0.3)
            abandoned = asyncio.create_task(
                run(writer, Deposit(request_id=abandoned_id, account_id=account, amount=eur(2)))
            )
            await asyncio.sleep(0.05)
            abandoned.cancel()  # what grpc.aio does when the call's deadline passes
            blocker.commit()
        await first
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        return await run(writer, Deposit(request_id=after_id, account_id=account, amount=eur(4)))

    after = asyncio.run(with_writers(ledger_dsn, body, lanes=1))
    recorded = ledger_conn.execute(
        "SELECT request_id FROM idempotency WHERE request_id = ANY(%s)",
        ([first_id, abandoned_id, after_id],),
    ).fetchall()
    assert sorted(row[0] for row in recorded) == sorted([first_id, after_id])
    assert ledger_conn.execute(
        "SELECT count(*) FROM events WHERE metadata->>'request_id' = %s", (abandoned_id,)
    ).fetchone() == (0,)
    assert [
        b.balance_minor for b in after.balances if b.account_id != system_account_id("EUR")
    ] == [100 + 1 + 4]


def test_concurrent_duplicates_produce_exactly_one_effect(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> list[CommandResult]:
        account = await open_funded(writers[0], 10_000)
        command = Withdraw(request_id="w-dup", account_id=account, amount=eur(100))
        # Twenty copies through two independent writers (two "server processes").
        return list(await asyncio.gather(*(run(writers[i % 2], command) for i in range(20))))

    results = asyncio.run(with_writers(ledger_dsn, body, writers=2))
    assert sum(not r.replayed for r in results) == 1
    assert len({(r.position, r.event_ids) for r in results}) == 1
    effects = ledger_conn.execute(
        "SELECT count(*) FROM events WHERE metadata->>'request_id' = 'w-dup'"
    ).fetchone()
    assert effects == (2,)  # one entry: the account's line and the system account's line


def test_in_order_commands_apply_in_order_across_chunks_and_stay_independent(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    account = new_id()
    commands: list[Any] = [
        OpenAccount(request_id=new_id(), account_id=account, owner_name="O", currency="EUR")
    ]
    # Each withdrawal needs the deposit just before it: any reordering would reject one.
    for _ in range(6):
        commands.append(Deposit(request_id=new_id(), account_id=account, amount=eur(10)))
        commands.append(Withdraw(request_id=new_id(), account_id=account, amount=eur(10)))
    # Refused (balance 0 here), and the deposit after it still goes through.
    commands.append(Withdraw(request_id="in-order-refused", account_id=account, amount=eur(1)))
    commands.append(Deposit(request_id=new_id(), account_id=account, amount=eur(7)))

    async def body(writers: list[LedgerWriter]) -> list[Any]:
        # Unrelated single commands race with the ordered ones for the same lanes.
        other = asyncio.gather(*(open_funded(writers[0], 5) for _ in range(6)))
        outcomes = await writers[0].execute_in_order([prepared(c) for c in commands])
        await other
        return outcomes

    # Chunks of 4: the 15 commands span four transactions, on two lanes.
    outcomes = asyncio.run(with_writers(ledger_dsn, body, batch_size_max=4))
    assert len(outcomes) == len(commands)
    refused = outcomes[-2]
    assert isinstance(refused, Rejection) and refused.reason is Reason.INSUFFICIENT_FUNDS
    accepted = [o for i, o in enumerate(outcomes) if i != len(outcomes) - 2]
    assert all(isinstance(o, CommandResult) and not o.replayed for o in accepted)
    positions = [o.position for o in accepted]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert ledger_conn.execute(
        "SELECT balance_minor FROM accounts WHERE account_id = %s", (account,)
    ).fetchone() == (7,)
    assert ledger_conn.execute(
        "SELECT count(*) FROM idempotency WHERE request_id = 'in-order-refused'"
    ).fetchone() == (0,)


def test_each_command_of_a_transaction_answers_with_its_own_balances(ledger_dsn: str) -> None:
    # Both transfers go in one transaction and move the same two accounts; each answer
    # must show the balances right after its own events, not the transaction's last.
    async def body(writers: list[LedgerWriter]) -> tuple[str, str, list[Any]]:
        ada = await open_funded(writers[0], 1_000)
        bob = await open_funded(writers[0], 1_000)
        transfers = [
            TransferFunds(
                request_id=new_id(), from_account_id=ada, to_account_id=bob, amount=eur(300)
            ),
            TransferFunds(
                request_id=new_id(), from_account_id=bob, to_account_id=ada, amount=eur(200)
            ),
        ]
        return ada, bob, await writers[0].execute_in_order([prepared(t) for t in transfers])

    ada, bob, outcomes = asyncio.run(with_writers(ledger_dsn, body))
    first, second = outcomes
    assert isinstance(first, CommandResult) and isinstance(second, CommandResult)
    assert first.position < second.position
    after_first = {b.account_id: (b.balance_minor, b.version) for b in first.balances}
    after_second = {b.account_id: (b.balance_minor, b.version) for b in second.balances}
    # Opened (1) and funded (2): the first transfer is version 3, the second version 4.
    assert after_first == {ada: (700, 3), bob: (1_300, 3)}
    assert after_second == {bob: (1_100, 4), ada: (900, 4)}


def test_a_committed_write_notifies_the_outbox_channel_and_a_rejection_does_not(
    ledger_dsn: str,
) -> None:
    # The outbox poller sleeps until this notification (or its next poll): a lost one
    # shows only as publish latency, so it is checked here directly.
    with psycopg.connect(ledger_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

        async def body(writers: list[LedgerWriter]) -> None:
            # Two committed writes, one after the other: the opening and the deposit.
            account = await open_funded(writers[0], 5)
            with pytest.raises(Rejection):
                await run(
                    writers[0], Withdraw(request_id=new_id(), account_id=account, amount=eur(6))
                )

        asyncio.run(with_writers(ledger_dsn, body))
        received = list(listener.notifies(timeout=2.0, stop_after=10))
    # The refused withdrawal writes and commits nothing, so it sends nothing.
    assert [n.channel for n in received] == [NOTIFY_CHANNEL] * 2


def test_a_write_refused_in_the_commit_round_trip_fails_only_its_command(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    # The database refuses one command's outbox row: the failure surfaces in the second
    # round trip (the writes and COMMIT), after BEGIN and the reads succeeded.
    ledger_conn.execute(
        """CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.headers->>'request_id' = 'refused' THEN
                   RAISE EXCEPTION 'refused by the test';
               END IF;
               RETURN NEW;
           END $$"""
    )
    ledger_conn.execute(
        "CREATE TRIGGER refuse_for_test BEFORE INSERT ON outbox "
        "FOR EACH ROW EXECUTE FUNCTION refuse_for_test()"
    )

    async def body(writers: list[LedgerWriter]) -> list[CommandResult | ChronosError]:
        account = await open_funded(writers[0], 1_000)
        # One writer lane and one connection: every later transaction reuses the
        # connection the failed one ran on.
        outcomes = await writers[0].execute_in_order(
            [
                prepared(Deposit(request_id=request_id, account_id=account, amount=eur(10)))
                for request_id in ("before", "refused", "after")
            ]
        )
        outcomes.append(
            await run(writers[0], Withdraw(request_id="later", account_id=account, amount=eur(5)))
        )
        return outcomes

    try:
        outcomes = asyncio.run(with_writers(ledger_dsn, body, lanes=1, pool_size_max=1))
    finally:
        ledger_conn.execute("DROP TRIGGER refuse_for_test ON outbox")
        ledger_conn.execute("DROP FUNCTION refuse_for_test()")
    before, refused, after, later = outcomes
    assert isinstance(refused, StoreFailure) and "refused by the test" in str(refused)
    # A server failure stops an ordered batch: what follows it in the batch is not run.
    assert isinstance(after, Rejection) and after.reason is Reason.NOT_APPLIED
    assert after.metadata == {"request_id": "refused"}
    for result in (before, later):
        assert isinstance(result, CommandResult) and not result.replayed, result
    assert isinstance(later, CommandResult)
    system = system_account_id("EUR")
    assert [b.balance_minor for b in later.balances if b.account_id != system] == [1_005]
    stored = ledger_conn.execute(
        "SELECT request_id FROM idempotency WHERE request_id IN ('before', 'refused', 'after')"
    ).fetchall()
    assert sorted(row[0] for row in stored) == ["before"]


def test_database_outage_is_unavailable_and_writes_nothing() -> None:
    # A port nothing listens on: every connection attempt is refused.
    dsn = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1"

    async def body() -> None:
        pool = writer_pool(dsn, min_size=0, max_size=1)
        await pool.open(wait=False)
        writer = LedgerWriter(pool, WriterSettings(lanes=1, connection_timeout_seconds=1.0))
        writer.start()
        try:
            with pytest.raises(StoreUnavailable):
                await run(writer, Deposit(request_id="r", account_id=new_id(), amount=eur(1)))
        finally:
            await writer.close()
            await pool.close(timeout=1)

    asyncio.run(body())


def test_random_transfers_under_concurrency_keep_every_invariant(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    rng = random.Random(7)
    accounts_count = 5
    transfers_count = 400

    async def body(writers: list[LedgerWriter]) -> tuple[list[str], dict[str, CommandResult]]:
        accounts = [
            await open_funded(writers[0], 1_000, limit_minor=rng.choice([0, 200]))
            for _ in range(accounts_count)
        ]
        commands = []
        for _ in range(transfers_count):
            source, target = rng.sample(accounts, 2)
            commands.append(
                TransferFunds(
                    request_id=new_id(),
                    from_account_id=source,
                    to_account_id=target,
                    amount=eur(rng.randint(1, 400)),
                )
            )
        semaphore = asyncio.Semaphore(64)

        async def one(index: int, command: TransferFunds) -> tuple[str, CommandResult | None]:
            async with semaphore:
                try:
                    return command.request_id, await run(writers[index % 2], command)
                except Rejection as rejection:
                    assert rejection.reason is Reason.INSUFFICIENT_FUNDS, rejection
                    return command.request_id, None

        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one(i, c) for i, c in enumerate(commands))), timeout=240
        )
        return accounts, {rid: result for rid, result in outcomes if result is not None}

    accounts, accepted = asyncio.run(with_writers(ledger_dsn, body, writers=2, lanes=2))
    assert 0 < len(accepted) <= transfers_count

    # Fold the whole event store independently of the writer's state table.
    balances: dict[str, int] = defaultdict(int)
    versions: dict[str, list[int]] = defaultdict(list)
    positions: list[int] = []
    request_events: Counter[str] = Counter()
    for stored in iter_events(ledger_conn):
        positions.append(stored.position)
        versions[stored.stream_id].append(stored.stream_version)
        request_events[stored.metadata["request_id"]] += 1
        event = mapper.decode(stored.event_type, stored.schema_version, stored.payload)
        if isinstance(event, LinePosted):
            balances[stored.stream_id] += event.signed_amount_minor
            assert balances[stored.stream_id] == event.balance_after_minor

    assert positions == list(range(1, len(positions) + 1)), "positions are gapless"
    for stream, stream_versions in versions.items():
        assert stream_versions == list(range(1, len(stream_versions) + 1)), stream
    assert sum(balances.values()) == 0, "the currency is conserved"
    limits = dict(
        ledger_conn.execute(
            "SELECT account_id::text, overdraft_limit_minor FROM accounts WHERE kind = 'USER'"
        ).fetchall()
    )
    for account in accounts:
        assert balances[account] >= -limits[account]
    for request_id in accepted:
        assert request_events[request_id] == 2, "one transfer = exactly two lines"
    state = dict(
        ledger_conn.execute("SELECT account_id::text, balance_minor FROM accounts").fetchall()
    )
    assert state == {a: b for a, b in balances.items()}
    # The hash chain the writers computed under the head row lock is gapless and correct.
    verified = verify_chain(ledger_conn)
    assert verified.intact, verified.broken
    assert verified.events_checked == len(positions)


def test_opposite_transfers_from_two_writers_do_not_deadlock(ledger_dsn: str) -> None:
    async def body(writers: list[LedgerWriter]) -> int:
        a = await open_funded(writers[0], 100_000)
        b = await open_funded(writers[0], 100_000)
        commands = [
            TransferFunds(
                request_id=new_id(),
                from_account_id=a if i % 2 else b,
                to_account_id=b if i % 2 else a,
                amount=eur(1),
            )
            for i in range(200)
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*(run(writers[i % 2], c) for i, c in enumerate(commands))), timeout=120
        )
        return len(results)

    assert asyncio.run(with_writers(ledger_dsn, body, writers=2)) == 200


def test_expiry_job_removes_only_expired_records(
    ledger_dsn: str, ledger_conn: psycopg.Connection[Any]
) -> None:
    async def body(writers: list[LedgerWriter]) -> int:
        await open_funded(writers[0], 0)
        ledger_conn.execute(
            "INSERT INTO idempotency VALUES ('old', 'Deposit', '\\x00', '{}', "
            "now() - interval '2 days', now() - interval '1 day')"
        )
        return await run_expiry_job(ledger_dsn)

    assert asyncio.run(with_writers(ledger_dsn, body)) == 1
    remaining = ledger_conn.execute(
        "SELECT count(*) FILTER (WHERE request_id = 'old'), count(*) FROM idempotency"
    ).fetchone()
    assert remaining is not None and remaining[0] == 0 and remaining[1] >= 1


def test_migrate_is_idempotent(ledger_dsn: str) -> None:
    assert migrate(ledger_dsn) == []
