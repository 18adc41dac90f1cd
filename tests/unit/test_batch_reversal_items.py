"""ReverseEntry as an ExecuteBatch item, without a database: every field of the
BatchCommand oneof has a mapping, a reversal item carries the lines of the entry it
names, two reversals of one entry in a batch accept only the first (failing an atomic
batch whole), and the item needs journal:write from an unrestricted token."""

from __future__ import annotations

import itertools

from chronos.domain.accounts import Account, AccountStatus
from chronos.domain.commands import (
    Command,
    Deposit,
    Money,
    OriginalLine,
    ReverseEntry,
    Side,
)
from chronos.domain.errors import Reason, Rejection
from chronos.domain.events import AccountKind, EntryKind
from chronos.event_store.decisions import (
    Accepted,
    BatchDecision,
    decide_batch,
    settle_outcomes,
)
from chronos.event_store.entries import entries_named, with_original
from chronos.security import scopes
from chronos.security.authorization import authorize_command
from chronos.security.caller import Caller
from chronos.v1 import commands_pb2
from command_server.requests import FROM_PROTO

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
ENTRY = "00000000-0000-4000-8000-0000000000e1"
OTHER_ENTRY = "00000000-0000-4000-8000-0000000000e2"


def transfer_lines(amount_minor: int) -> tuple[OriginalLine, ...]:
    """The two lines of a transfer of ``amount_minor`` EUR from A to B."""
    return tuple(
        OriginalLine(
            account_id=account_id,
            side=side,
            currency="EUR",
            amount_minor=amount_minor,
            counterparty_account_id=counterparty,
            kind=EntryKind.TRANSFER.value,
            line_index=index,
        )
        for index, (account_id, side, counterparty) in enumerate(
            [(A, Side.DEBIT, B), (B, Side.CREDIT, A)]
        )
    )


def account(account_id: str, balance_minor: int) -> Account:
    return Account(
        account_id=account_id,
        kind=AccountKind.USER,
        owner_name="Owner",
        currency="EUR",
        overdraft_limit_minor=0,
        status=AccountStatus.ACTIVE,
        balance_minor=balance_minor,
        version=2,
    )


def reversal(request_id: str, entry_id: str = ENTRY) -> ReverseEntry:
    return ReverseEntry(request_id=request_id, entry_id=entry_id, reason="sent twice")


def test_every_batch_command_field_has_a_mapping() -> None:
    fields = {field.name for field in commands_pb2.BatchCommand.DESCRIPTOR.oneofs[0].fields}
    assert set(FROM_PROTO) == fields
    assert commands_pb2.BatchCommand.DESCRIPTOR.fields_by_name["reverse_entry"].number == 43


def test_a_reverse_entry_item_maps_to_the_command_the_rpc_runs() -> None:
    request = commands_pb2.ReverseEntryRequest(
        request_id="r-1", entry_id=ENTRY, reason="typo", force=True, metadata={"case": "C-9"}
    )
    item = commands_pb2.BatchCommand(reverse_entry=request)
    kind = item.WhichOneof("command")
    assert kind == "reverse_entry"
    assert FROM_PROTO[kind](getattr(item, kind)) == ReverseEntry(
        request_id="r-1",
        entry_id=ENTRY,
        reason="typo",
        force=True,
        metadata=(("case", "C-9"),),
    )


def test_the_entries_read_are_the_reversed_ones_each_once() -> None:
    commands: list[Command] = [
        reversal("r-1", OTHER_ENTRY),
        Deposit(request_id="d", account_id=A, amount=Money(currency="EUR", minor_units=1)),
        reversal("r-2"),
        reversal("r-3", OTHER_ENTRY),
    ]
    assert entries_named(commands) == [ENTRY, OTHER_ENTRY]
    assert entries_named(commands[1:2]) == []


def test_each_reversal_item_gets_its_entrys_lines_and_other_items_stay() -> None:
    deposit = Deposit(request_id="d", account_id=A, amount=Money(currency="EUR", minor_units=1))
    originals = {ENTRY: transfer_lines(300), OTHER_ENTRY: ()}
    assert with_original(deposit, originals) is deposit
    assert with_original(reversal("r-1"), originals) == ReverseEntry(
        request_id="r-1", entry_id=ENTRY, reason="sent twice", original=transfer_lines(300)
    )
    unknown = with_original(reversal("r-2", OTHER_ENTRY), originals)
    assert isinstance(unknown, ReverseEntry) and unknown.original == ()


def decide(commands: list[ReverseEntry]) -> BatchDecision:
    """Decides ``commands`` after a transfer of 300 from A (then 700) to B (then 300)."""
    originals = {ENTRY: transfer_lines(300)}
    ids = itertools.count(1)
    return decide_batch(
        [with_original(command, originals) for command in commands],
        {A: account(A, 700), B: account(B, 300)},
        lambda: f"00000000-0000-4000-8000-{next(ids):012d}",
    )


def test_the_second_reversal_of_one_entry_in_a_batch_is_already_reversed() -> None:
    first, second = decide([reversal("r-1"), reversal("r-2")]).outcomes
    assert isinstance(first, Accepted)
    assert {b.account_id: b.balance_minor for b in first.balances} == {A: 1_000, B: 0}
    assert isinstance(second, Rejection)
    assert second.reason is Reason.ENTRY_ALREADY_REVERSED
    assert second.metadata == {"entry_id": ENTRY, "reversal_entry_id": first.entry_id}


def test_in_an_atomic_batch_the_second_reversal_fails_the_whole_batch() -> None:
    decision = decide([reversal("r-1"), reversal("r-2")])
    outcomes, forgotten, failed = settle_outcomes(2, {}, decision, atomic=True)
    assert failed
    reasons = [o.reason if isinstance(o, Rejection) else None for o in outcomes]
    assert reasons == [Reason.LINKED_COMMAND_FAILED, Reason.ENTRY_ALREADY_REVERSED]
    assert [index for index, _ in forgotten] == [0, 1]


def test_a_reversal_item_needs_journal_write_from_an_unrestricted_token() -> None:
    item = reversal("r-1")
    funds_only = Caller(subject="s", scopes=frozenset({scopes.FUNDS_WRITE}))
    refusal = authorize_command(funds_only, item)
    assert refusal is not None and refusal.metadata == {"required_scope": scopes.JOURNAL_WRITE}
    journal = Caller(subject="s", scopes=frozenset({scopes.JOURNAL_WRITE}))
    assert authorize_command(journal, item) is None
    restricted = Caller(
        subject="s", scopes=frozenset({scopes.JOURNAL_WRITE}), accounts=frozenset({A, B})
    )
    refusal = authorize_command(restricted, item)
    assert refusal is not None and refusal.metadata == {"restriction": scopes.ACCOUNTS_CLAIM}
