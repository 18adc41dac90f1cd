"""The model-based test: random command sequences against the real service and against a
pure reference model of the ledger (:mod:`tests.e2e.ledger_model`), compared step by step.

One set of real processes (command server, outbox poller, projector, query server, TLS and
tokens on) serves the whole test. Hypothesis' stateful testing drives open, deposit,
withdraw, transfer, hold (with and without a timeout), full, partial and excessive post,
void, expiry, reversal (forced or not, of a reversal, twice), freeze, unfreeze, close,
batches (atomic or not) and replays through real gRPC calls, and after each step compares:

- the answer: OK, or the ErrorInfo reason the model expects;
- the balances the answer carries (posted, pending debits, pending credits, available);
- the write side: every account's row and every hold's state in PostgreSQL;
- and at the end of each example the read side: ``GetAccount`` with the last position
  (command -> Kafka -> Elasticsearch -> query) for every account of the example.

Expiry runs on an injected clock, not by waiting: holds get timeouts of 900 or 3,600
seconds, which never pass during the test, so the command server's own expiry job (which
runs as in production) never finds one of them due, and a post or void always finds its
hold's timeout ahead. The expiry rule runs the real expiry job in-process, with a claim
and a writer whose clock is 1,800 or 7,200 seconds ahead, so exactly the holds whose
timeout is at most that long expire, as in the model.

Each example opens fresh accounts, so examples do not interfere; a failure shrinks to a
minimal sequence, printed by hypothesis. ``derandomize`` keeps CI reproducible.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from elasticsearch import Elasticsearch
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chronos.event_store.hold_expiry import expire_due_holds
from chronos.event_store.writer import LedgerWriter, WriterSettings, writer_pool
from chronos.v1 import commands_pb2 as c
from chronos.v1 import ledger_pb2, queries_pb2
from tests.e2e.helpers import details_of
from tests.e2e.ledger_model import OK, Answer, LedgerModel, ModelAccount, Sums
from tests.e2e.secured_pipeline import SecuredPipeline, secured_pipeline

CALL_TIMEOUT_SECONDS = 15
READ_WAIT_SECONDS_MAX = 60.0
CURRENCIES = ("EUR", "USD", "GBP")
# Mostly one currency, so that most transfers and holds are between accounts that can.
CURRENCY_CHOICES = ("EUR", "EUR", "EUR", "USD", "GBP")
# Freezing is rarer in a batch: a frozen account refuses most of what follows.
BATCH_KINDS = ("deposit", "withdraw", "transfer", "hold") * 2 + ("freeze",)
# Per kind of movement: its RPC alone, and its field in a batch item.
RPCS = {
    "deposit": ("Deposit", "deposit"),
    "withdraw": ("Withdraw", "withdraw"),
    "transfer": ("TransferFunds", "transfer_funds"),
    "hold": ("CreatePendingTransfer", "create_pending_transfer"),
    "freeze": ("FreezeAccount", "freeze_account"),
}
# One draw in this many names an entry or hold that does not exist.
UNKNOWN_ONE_IN = 8
TIMEOUTS_SECONDS = (0, 900, 900, 3600)
HORIZONS_SECONDS = (1800, 7200)
STATUS_NAMES = {
    ledger_pb2.ACCOUNT_STATUS_ACTIVE: "ACTIVE",
    ledger_pb2.ACCOUNT_STATUS_FROZEN: "FROZEN",
    ledger_pb2.ACCOUNT_STATUS_CLOSED: "CLOSED",
}
# Codes a client must never see for a command it sent well formed.
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@dataclass(frozen=True)
class Service:
    pipeline: SecuredPipeline
    db: psycopg.Connection[Any]


@pytest.fixture(scope="module")
def service(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    es_client: Elasticsearch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    with (
        secured_pipeline(
            pg_dsn, kafka_bootstrap, es_url, es_client, tmp_path_factory, "model"
        ) as pipeline,
        psycopg.connect(pipeline.dsn, autocommit=True) as db,
    ):
        yield Service(pipeline, db)


def new_id() -> str:
    return str(uuid.uuid4())


def money(currency: str, minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency=currency, minor_units=minor)


def sums(message: Any) -> Sums:
    """(posted, pending debits, pending credits, available) of a balance message."""
    return (
        message.balance.minor_units,
        message.pending_debits.minor_units,
        message.pending_credits.minor_units,
        message.available.minor_units,
    )


def outcome_of(error: Any) -> str:
    """The ErrorInfo reason of a refusal (a gRPC error or a batch item's status)."""
    return details_of(error)[0]


async def expire_ahead(dsn: str, horizon_seconds: int) -> int:
    """Runs the real expiry job once, on a clock ``horizon_seconds`` ahead: its claim and
    the writer that decides the expiries both judge holds due by that time."""
    ahead = datetime.now(UTC) + timedelta(seconds=horizon_seconds)
    pool = writer_pool(dsn, min_size=1, max_size=2)
    await pool.open(wait=True, timeout=20)
    # The outbox rows' topic is the poller's to choose: the writer's default will do.
    writer = LedgerWriter(pool, WriterSettings(), clock=lambda: ahead)
    writer.start()
    try:
        run = await expire_due_holds(pool, writer.execute_in_order, now=ahead)
    finally:
        await writer.close()
        await pool.close()
    return run.expired


@dataclass(frozen=True)
class Movement:
    """A command that a rule sends alone or as an item of a batch: its request, and what
    the model expects of it."""

    kind: str
    first: str
    second: str
    amount: int
    currency: str
    timeout: int = 0

    def request(self) -> Any:
        rid, amount = new_id(), money(self.currency, self.amount)
        match self.kind:
            case "deposit":
                return c.DepositRequest(request_id=rid, account_id=self.first, amount=amount)
            case "withdraw":
                return c.WithdrawRequest(request_id=rid, account_id=self.first, amount=amount)
            case "transfer" | "hold":
                between: dict[str, Any] = {
                    "from_account_id": self.first,
                    "to_account_id": self.second,
                }
                if self.kind == "transfer":
                    return c.TransferFundsRequest(request_id=rid, amount=amount, **between)
                return c.CreatePendingTransferRequest(
                    request_id=rid, amount=amount, timeout_seconds=self.timeout, **between
                )
            case _:
                return c.FreezeAccountRequest(request_id=rid, account_id=self.first, reason="m")

    def expectation(self, response: Any) -> Callable[[LedgerModel], Answer]:
        """The model's answer, given the ids the service gave (none when it refused)."""
        entry_id = str(response.entry_id) if response is not None else ""
        pending_id = str(response.pending_id) if response is not None else ""
        first, second, amount, currency = self.first, self.second, self.amount, self.currency
        expectations: dict[str, Callable[[LedgerModel], Answer]] = {
            "deposit": lambda m: m.deposit(first, currency, amount, entry_id),
            "withdraw": lambda m: m.withdraw(first, currency, amount, entry_id),
            "transfer": lambda m: m.transfer(first, second, currency, amount, entry_id),
            "hold": lambda m: m.create_hold(
                first, second, currency, amount, self.timeout, pending_id
            ),
            "freeze": lambda m: m.freeze(first),
        }
        return expectations[self.kind]


class LedgerMachine(RuleBasedStateMachine):
    """One example: fresh accounts, a fresh model, and the shared service."""

    accounts = Bundle("accounts")
    holds = Bundle("holds")
    entries = Bundle("entries")

    def __init__(self, service: Service) -> None:
        super().__init__()
        self.service = service
        self.model = LedgerModel()
        self.last_accepted: tuple[Callable[..., Any], Any, Any] | None = None
        # Set once a comparison failed: the read side is then not compared at the end,
        # so that the failure hypothesis shrinks is the first one, not its echo.
        self.diverged = False

    # --- calling and comparing ----------------------------------------------

    def call(self, method: str, request: Any) -> tuple[str, Any]:
        stub = functools.partial(
            getattr(self.service.pipeline.commands, method),
            metadata=self.service.pipeline.tokens.admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        try:
            response = stub(request)
        except grpc.RpcError as error:
            assert error.code() not in NEVER, f"{method}: {error.code()} {error.details()}"
            status = rpc_status.from_call(error)
            assert status is not None, f"{method}: {error.code()} without details"
            return outcome_of(status), None
        self.last_accepted = (stub, request, response)
        return OK, response

    def compare(self, what: str, expected: Answer, outcome: str, response: Any) -> None:
        self.diverged = True
        assert outcome == expected.outcome, f"{what}: answered {outcome}, model {expected}"
        if outcome != OK:
            self.diverged = False
            return
        users = self.model.user_accounts()
        answered = {b.account_id: sums(b) for b in response.balances if b.account_id in users}
        assert answered == dict(expected.balances), f"{what}: balances {answered}"
        self.diverged = False

    def send(self, move: Movement) -> tuple[str, Any]:
        """Sends one movement alone and compares its answer with the model's."""
        outcome, response = self.call(RPCS[move.kind][0], move.request())
        self.compare(move.kind, move.expectation(response)(self.model), outcome, response)
        return outcome, response

    # --- accounts -----------------------------------------------------------

    @initialize(target=accounts, limit=st.sampled_from((0, 100)))
    def first_accounts(self, limit: int) -> Any:
        return multiple(
            self.open_and_fund(CURRENCIES[0], limit, 1000),
            self.open_and_fund(CURRENCIES[0], 0, 300),
        )

    @rule(
        target=accounts,
        currency=st.sampled_from(CURRENCY_CHOICES),
        limit=st.sampled_from((0, 0, 100)),
        funds=st.sampled_from((0, 300, 1000)),
    )
    def open_and_fund(self, currency: str, limit: int, funds: int) -> str:
        account_id = self.open_account(currency, limit)
        if funds:
            self.deposit(account_id, funds, False)
        return account_id

    def open_account(self, currency: str, limit: int) -> str:
        account_id = new_id()
        request = c.OpenAccountRequest(
            request_id=new_id(),
            account_id=account_id,
            owner_name="Model",
            currency=currency,
            overdraft_limit_minor=limit,
        )
        outcome, response = self.call("OpenAccount", request)
        self.compare("open", self.model.open(account_id, currency, limit), outcome, response)
        return account_id

    # Closing is rarer: a closed account takes nothing, so it ends what a sequence can do.
    @rule(account=accounts, change=st.sampled_from(("freeze", "unfreeze", "unfreeze", "close")))
    def change_status(self, account: str, change: str) -> None:
        method, request_type = {
            "freeze": ("FreezeAccount", c.FreezeAccountRequest),
            "unfreeze": ("UnfreezeAccount", c.UnfreezeAccountRequest),
            "close": ("CloseAccount", c.CloseAccountRequest),
        }[change]
        outcome, response = self.call(
            method, request_type(request_id=new_id(), account_id=account, reason="model")
        )
        expected = getattr(self.model, change)(account)
        self.compare(change, expected, outcome, response)

    # --- money movements ----------------------------------------------------

    @rule(
        target=entries,
        account=accounts,
        amount=st.integers(1, 500),
        foreign=st.integers(0, 3).map(lambda draw: draw == 3),
    )
    def deposit(self, account: str, amount: int, foreign: bool) -> Any:
        move = Movement("deposit", account, account, amount, self._currency(account, foreign))
        return self._entry(*self.send(move))

    @rule(target=entries, account=accounts, amount=st.integers(1, 500))
    def withdraw(self, account: str, amount: int) -> Any:
        move = Movement("withdraw", account, account, amount, self._currency(account, False))
        return self._entry(*self.send(move))

    @rule(
        target=entries,
        source=accounts,
        target_account=accounts,
        amount=st.integers(1, 500),
        draw=st.integers(1, UNKNOWN_ONE_IN),
    )
    def transfer(self, source: str, target_account: str, amount: int, draw: int) -> Any:
        target_account = self._counterparty(source, target_account, draw)
        currency = self._currency(source, False)
        return self._entry(
            *self.send(Movement("transfer", source, target_account, amount, currency))
        )

    @rule(target=entries, entry=entries, force=st.booleans(), draw=st.integers(1, UNKNOWN_ONE_IN))
    def reverse(self, entry: str, force: bool, draw: int) -> Any:
        entry = new_id() if draw == UNKNOWN_ONE_IN else entry
        request = c.ReverseEntryRequest(
            request_id=new_id(), entry_id=entry, reason="model", force=force
        )
        outcome, response = self.call("ReverseEntry", request)
        expected = self.model.reverse(entry, force, self._entry_id(response))
        self.compare("reverse", expected, outcome, response)
        return self._entry(outcome, response)

    # --- holds --------------------------------------------------------------

    @rule(
        target=holds,
        source=accounts,
        target_account=accounts,
        amount=st.integers(1, 500),
        timeout=st.sampled_from(TIMEOUTS_SECONDS),
        draw=st.integers(1, UNKNOWN_ONE_IN),
    )
    def create_hold(
        self, source: str, target_account: str, amount: int, timeout: int, draw: int
    ) -> Any:
        target_account = self._counterparty(source, target_account, draw)
        currency = self._currency(source, False)
        move = Movement("hold", source, target_account, amount, currency, timeout)
        outcome, response = self.send(move)
        return response.pending_id if outcome == OK else multiple()

    @rule(
        target=entries,
        hold=holds,
        how=st.sampled_from(("full", "partial", "exact", "above")),
        part=st.integers(1, 500),
        draw=st.integers(1, UNKNOWN_ONE_IN),
    )
    def post_hold(self, hold: str, how: str, part: int, draw: int) -> Any:
        if draw == UNKNOWN_ONE_IN:
            hold, amount = new_id(), 0
        else:
            held = self.model.holds[hold]
            currency = self.model.accounts[held.from_id].currency
            amount = {
                "full": 0,
                "partial": min(part, held.amount_minor),
                "exact": held.amount_minor,
                "above": held.amount_minor + part,
            }[how]
        request = c.PostPendingTransferRequest(request_id=new_id(), pending_id=hold)
        if amount:
            request.amount.CopyFrom(money(currency, amount))
        outcome, response = self.call("PostPendingTransfer", request)
        expected = self.model.post_hold(hold, amount, self._entry_id(response))
        self.compare(f"post ({how})", expected, outcome, response)
        return self._entry(outcome, response)

    @rule(hold=holds, draw=st.integers(1, UNKNOWN_ONE_IN))
    def void_hold(self, hold: str, draw: int) -> None:
        hold = new_id() if draw == UNKNOWN_ONE_IN else hold
        request = c.VoidPendingTransferRequest(request_id=new_id(), pending_id=hold, reason="m")
        outcome, response = self.call("VoidPendingTransfer", request)
        self.compare("void", self.model.void_hold(hold), outcome, response)

    @precondition(lambda machine: machine.model.expirable())
    @rule(horizon=st.sampled_from(HORIZONS_SECONDS))
    def expire(self, horizon: int) -> None:
        expired = asyncio.run(expire_ahead(self.service.pipeline.dsn, horizon))
        mine = self.model.expire(horizon)
        # Holds of earlier examples may expire too; never fewer than this example's.
        assert expired >= len(mine), f"expired {expired}, model {mine}"

    # --- batches and replays ------------------------------------------------

    @rule(
        items=st.lists(
            st.tuples(
                st.sampled_from(BATCH_KINDS),
                st.integers(0, 10**6),
                st.integers(0, 10**6),
                st.integers(1, 500),
            ),
            min_size=1,
            max_size=4,
        ),
        atomic=st.booleans(),
    )
    def batch(self, items: list[tuple[str, int, int, int]], atomic: bool) -> None:
        # In the order they were opened: ids are random, so sorting them would make the
        # same draws pick other accounts on a replay, and hypothesis could not shrink.
        known = list(self.model.user_accounts())
        specs = [
            (
                kind,
                known[a % len(known)],
                self._counterparty(
                    known[a % len(known)], known[b % len(known)], b % UNKNOWN_ONE_IN + 1
                ),
                n,
            )
            for kind, a, b, n in items
        ]
        moves = [Movement(kind, a, b, n, self._currency(a, False)) for kind, a, b, n in specs]
        commands = [c.BatchCommand(**{RPCS[m.kind][1]: m.request()}) for m in moves]
        response = self.service.pipeline.commands.ExecuteBatch(
            c.ExecuteBatchRequest(commands=commands, atomic=atomic),
            metadata=self.service.pipeline.tokens.admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        results = list(response.results)
        assert len(results) == len(moves)
        steps = [
            move.expectation(result.response if result.HasField("response") else None)
            for move, result in zip(moves, results, strict=True)
        ]
        expected = self.model.batch(steps, atomic)
        for index, (result, answer) in enumerate(zip(results, expected, strict=True)):
            if result.HasField("error"):
                self.compare(f"batch item {index}", answer, outcome_of(result.error), None)
            else:
                self.compare(f"batch item {index}", answer, OK, result.response)

    @rule()
    def replay_last(self) -> None:
        """The last accepted request again: the first answer, replayed, whatever
        happened since."""
        if self.last_accepted is None:
            return
        stub, request, first = self.last_accepted
        again = stub(request)
        assert again.replayed
        assert (again.position, again.entry_id, again.pending_id) == (
            first.position,
            first.entry_id,
            first.pending_id,
        )
        assert [sums(b) for b in again.balances] == [sums(b) for b in first.balances]

    # --- helpers ------------------------------------------------------------

    def _counterparty(self, source: str, target: str, draw: int) -> str:
        """``target``, or when it is ``source`` (a validation failure), mostly another
        account, so that most draws test the ledger rather than the validation."""
        if source != target or draw == UNKNOWN_ONE_IN:
            return target
        others = [key for key in self.model.user_accounts() if key != source]
        return others[0] if others else target

    def _currency(self, account: str, foreign: bool) -> str:
        own = self.model.accounts[account].currency
        return next(code for code in CURRENCIES if code != own) if foreign else own

    @staticmethod
    def _entry_id(response: Any) -> str:
        return str(response.entry_id) if response is not None else ""

    @staticmethod
    def _entry(outcome: str, response: Any) -> Any:
        return str(response.entry_id) if outcome == OK else multiple()

    # --- what must hold after every step ------------------------------------

    @invariant()
    def write_side_matches(self) -> None:
        """Every account's row and every hold's state in PostgreSQL equal the model's."""
        self.diverged = True
        users = self.model.user_accounts()
        rows = self.service.db.execute(
            "SELECT account_id::text, balance_minor, pending_debits_minor,"
            " pending_credits_minor, status FROM accounts WHERE account_id = ANY(%s::uuid[])",
            (list(users),),
        ).fetchall()
        stored = {row[0]: (int(row[1]), int(row[2]), int(row[3]), row[4]) for row in rows}
        expected = {key: (*a.sums()[:3], a.status) for key, a in users.items()}
        assert stored == expected
        holds = self.service.db.execute(
            "SELECT pending_id::text, state, posted_minor FROM pending_transfers"
            " WHERE pending_id = ANY(%s::uuid[])",
            (list(self.model.holds),),
        ).fetchall()
        assert {row[0]: (row[1], int(row[2])) for row in holds} == {
            key: (hold.state, hold.posted_minor) for key, hold in self.model.holds.items()
        }
        self.diverged = False

    def teardown(self) -> None:
        """The read side, end to end: every account of the example as GetAccount gives it
        once the projection reached the last position, equal to the model."""
        if self.diverged:
            return
        row = self.service.db.execute("SELECT position FROM ledger_head WHERE id = 1").fetchone()
        assert row is not None
        position = int(row[0])
        for account_id, account in self.model.user_accounts().items():
            read = self.service.pipeline.queries.GetAccount(
                queries_pb2.GetAccountRequest(account_id=account_id, min_position=position),
                metadata=self.service.pipeline.tokens.admin,
                timeout=READ_WAIT_SECONDS_MAX,
            )
            assert read_view(read) == model_view(account), account_id


def read_view(read: Any) -> tuple[Any, ...]:
    return (*sums(read), STATUS_NAMES[read.status], read.currency, read.overdraft_limit_minor)


def model_view(account: ModelAccount) -> tuple[Any, ...]:
    return (*account.sums(), account.status, account.currency, account.limit_minor)


# Shrinking a failure replays sequences against the real service: give it time.
@pytest.mark.timeout(900)
def test_the_ledger_answers_as_its_model_does(service: Service) -> None:
    run_state_machine_as_test(
        # A factory, as hypothesis allows: every example's machine gets the shared service.
        lambda: LedgerMachine(service),  # type: ignore[arg-type]
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
            ],
        ),
    )
