"""The authorization rules (chronos.security.authorization), without servers: which scope
each method and command needs, and what an account-restricted token may touch."""

from __future__ import annotations

import pytest

from chronos.domain.commands import (
    CloseAccount,
    Command,
    CreatePendingTransfer,
    Deposit,
    FreezeAccount,
    JournalLine,
    Money,
    OpenAccount,
    PostJournalEntry,
    PostPendingTransfer,
    ReverseEntry,
    Side,
    TransferFunds,
    UnfreezeAccount,
    VoidPendingTransfer,
    Withdraw,
)
from chronos.domain.errors import Reason, Rejection
from chronos.security import scopes
from chronos.security.authorization import (
    COMMAND_SCOPES,
    METHOD_SCOPES,
    account_uses,
    authorize_call,
    authorize_command,
    authorize_read,
    authorize_search,
)
from chronos.security.caller import UNAUTHENTICATED, Caller
from chronos.v1 import commands_pb2, queries_pb2

COMMAND_SERVICE = commands_pb2.DESCRIPTOR.services_by_name["CommandService"]
QUERY_SERVICE = queries_pb2.DESCRIPTOR.services_by_name["QueryService"]
ALL_METHODS = [
    method.full_name for service in (COMMAND_SERVICE, QUERY_SERVICE) for method in service.methods
]

# The public contract, written out independently of the module under test.
METHODS_BY_SCOPE = {
    scopes.LEDGER_READ: {
        "chronos.v1.QueryService.GetAccount",
        "chronos.v1.QueryService.ListTransactions",
        "chronos.v1.QueryService.GetBalanceAt",
        "chronos.v1.QueryService.SearchAccounts",
        "chronos.v1.QueryService.ListPendingTransfers",
        "chronos.v1.QueryService.ListEvents",
        "chronos.v1.QueryService.GetEntry",
    },
    scopes.ACCOUNTS_WRITE: {
        "chronos.v1.CommandService.OpenAccount",
        "chronos.v1.CommandService.FreezeAccount",
        "chronos.v1.CommandService.UnfreezeAccount",
        "chronos.v1.CommandService.CloseAccount",
        "chronos.v1.CommandService.ExecuteBatch",
    },
    scopes.FUNDS_WRITE: {
        "chronos.v1.CommandService.Deposit",
        "chronos.v1.CommandService.Withdraw",
        "chronos.v1.CommandService.TransferFunds",
        "chronos.v1.CommandService.CreatePendingTransfer",
        "chronos.v1.CommandService.PostPendingTransfer",
        "chronos.v1.CommandService.VoidPendingTransfer",
        "chronos.v1.CommandService.ExecuteBatch",
    },
    scopes.JOURNAL_WRITE: {
        "chronos.v1.CommandService.PostJournalEntry",
        "chronos.v1.CommandService.ExecuteBatch",
        "chronos.v1.CommandService.ReverseEntry",
    },
}

MINE = "0b6f2c1e-7a52-4d3e-9d7e-1f1a2b3c4d5e"
OTHER = "9c0ffee0-0000-4000-8000-000000000001"
SYSTEM = "00000000-0000-0000-0000-000000000978"
EUR = Money(currency="EUR", minor_units=100)


def caller(*granted: str, accounts: tuple[str, ...] | None = None) -> Caller:
    return Caller(
        subject="alice",
        token_id="t-1",
        scopes=frozenset(granted),
        accounts=None if accounts is None else frozenset(accounts),
    )


def assert_denied(rejection: Rejection | None, **metadata: str) -> Rejection:
    assert rejection is not None
    assert rejection.reason is Reason.PERMISSION_DENIED
    assert rejection.metadata == metadata
    return rejection


def test_every_method_of_both_services_has_a_rule() -> None:
    # 13 before issue 17; ReverseEntry, the three hold commands and
    # ListPendingTransfers added five; issue 18's ListEvents and GetEntry two.
    assert len(ALL_METHODS) == 20
    assert set(METHOD_SCOPES) == set(ALL_METHODS)


@pytest.mark.parametrize("scope", sorted(METHODS_BY_SCOPE))
def test_each_scope_allows_exactly_its_methods(scope: str) -> None:
    allowed = {method for method in ALL_METHODS if authorize_call(caller(scope), method) is None}
    assert allowed == METHODS_BY_SCOPE[scope]


def test_admin_allows_every_method_and_so_does_authentication_turned_off() -> None:
    for method in ALL_METHODS:
        assert authorize_call(caller(scopes.ADMIN), method) is None
        assert authorize_call(UNAUTHENTICATED, method) is None


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_token_without_scopes_or_with_unknown_ones_is_refused_everything(method: str) -> None:
    assert_denied(
        authorize_call(caller(), method), required_scope=" ".join(sorted(METHOD_SCOPES[method]))
    )
    assert authorize_call(caller("ledger:write", "Admin", "funds"), method) is not None


def test_a_missing_scope_is_named_in_the_message_and_the_metadata() -> None:
    rejection = assert_denied(
        authorize_call(caller(scopes.LEDGER_READ), "chronos.v1.CommandService.TransferFunds"),
        required_scope="funds:write",
    )
    assert rejection.message == "This token lacks the scope funds:write, which TransferFunds needs."


def test_execute_batch_names_every_write_scope_that_would_do() -> None:
    rejection = assert_denied(
        authorize_call(caller(scopes.LEDGER_READ), "chronos.v1.CommandService.ExecuteBatch"),
        required_scope="accounts:write funds:write journal:write",
    )
    assert "one of accounts:write, funds:write, journal:write, or admin" in rejection.message


@pytest.mark.parametrize(
    "method",
    [
        "chronos.v1.CommandService.Mint",
        "chronos.v1.Other.GetAccount",
        "/chronos.v1.CommandService/Deposit",
        "",
    ],
)
def test_a_method_without_a_rule_is_refused_even_to_admin(method: str) -> None:
    assert_denied(authorize_call(caller(scopes.ADMIN), method), method=method)


# One command of every kind, acting on ``account`` (the one a restriction must list).
def commands_on(account: str) -> dict[type[Command], Command]:
    return {
        OpenAccount: OpenAccount(
            request_id="r", account_id=account, owner_name="A", currency="EUR"
        ),
        Deposit: Deposit(request_id="r", account_id=account, amount=EUR),
        Withdraw: Withdraw(request_id="r", account_id=account, amount=EUR),
        TransferFunds: TransferFunds(
            request_id="r", from_account_id=account, to_account_id=OTHER, amount=EUR
        ),
        PostJournalEntry: PostJournalEntry(
            request_id="r",
            lines=(
                JournalLine(account_id=account, amount=EUR, side=Side.DEBIT),
                JournalLine(account_id=SYSTEM, amount=EUR, side=Side.CREDIT),
            ),
        ),
        FreezeAccount: FreezeAccount(request_id="r", account_id=account),
        UnfreezeAccount: UnfreezeAccount(request_id="r", account_id=account),
        CloseAccount: CloseAccount(request_id="r", account_id=account),
        CreatePendingTransfer: CreatePendingTransfer(
            request_id="r", from_account_id=account, to_account_id=OTHER, amount=EUR
        ),
        # A post or void names its hold; the server fills in the hold's accounts.
        PostPendingTransfer: PostPendingTransfer(
            request_id="r", pending_id=OTHER, from_account_id=account, to_account_id=OTHER
        ),
        VoidPendingTransfer: VoidPendingTransfer(
            request_id="r", pending_id=OTHER, from_account_id=account, to_account_id=OTHER
        ),
        ReverseEntry: ReverseEntry(request_id="r", entry_id=OTHER),
    }


def test_every_command_kind_has_a_scope_matching_its_method() -> None:
    assert set(COMMAND_SCOPES) == set(commands_on(MINE))
    for kind, scope in COMMAND_SCOPES.items():
        assert METHOD_SCOPES[f"chronos.v1.CommandService.{kind.__name__}"] == {scope}


@pytest.mark.parametrize("kind", list(commands_on(MINE)), ids=lambda kind: kind.__name__)
def test_a_command_needs_its_own_scope(kind: type[Command]) -> None:
    command = commands_on(MINE)[kind]
    scope = COMMAND_SCOPES[kind]
    assert authorize_command(caller(scope), command) is None
    assert authorize_command(caller(scopes.ADMIN), command) is None
    others = [name for name in scopes.ALL_SCOPES if name not in (scope, scopes.ADMIN)]
    rejection = assert_denied(authorize_command(caller(*others), command), required_scope=scope)
    assert rejection.message == f"This token lacks the scope {scope}, which {kind.__name__} needs."


# ReverseEntry names no account: a restricted token may not send it at all (see
# test_reverse_entry_needs_journal_write_and_an_unrestricted_token).
@pytest.mark.parametrize(
    "kind", [k for k in commands_on(MINE) if k is not ReverseEntry], ids=lambda kind: kind.__name__
)
def test_a_restricted_token_acts_on_its_accounts_only(kind: type[Command]) -> None:
    restricted = caller(scopes.ADMIN, accounts=(MINE,))
    assert authorize_command(restricted, commands_on(MINE)[kind]) is None
    rejection = assert_denied(
        authorize_command(restricted, commands_on(OTHER)[kind]), account_id=OTHER
    )
    assert f"account {OTHER}" in rejection.message


def test_the_refusals_say_what_was_refused() -> None:
    restricted = caller(scopes.ADMIN, accounts=(MINE,))
    messages = {
        kind.__name__: authorize_command(restricted, command).message  # type: ignore[union-attr]
        for kind, command in commands_on(OTHER).items()
    }
    expected = {
        "OpenAccount": "open",
        "Deposit": "deposit into",
        "Withdraw": "debit",
        "TransferFunds": "debit",
        "PostJournalEntry": "debit",
        "FreezeAccount": "freeze",
        "UnfreezeAccount": "unfreeze",
        "CloseAccount": "close",
    }
    for kind, action in expected.items():
        assert messages[kind] == (
            f"This token is restricted to some accounts and may not {action} account {OTHER}."
        )


def test_money_may_be_sent_to_any_account() -> None:
    restricted = caller(scopes.FUNDS_WRITE, scopes.JOURNAL_WRITE, accounts=(MINE,))
    transfer = TransferFunds(request_id="r", from_account_id=MINE, to_account_id=OTHER, amount=EUR)
    assert authorize_command(restricted, transfer) is None
    entry = PostJournalEntry(
        request_id="r",
        lines=(
            JournalLine(account_id=MINE, amount=EUR, side=Side.DEBIT),
            JournalLine(account_id=OTHER, amount=EUR, side=Side.CREDIT),
        ),
    )
    assert authorize_command(restricted, entry) is None
    assert [use.account_id for use in account_uses(entry)] == [MINE]


def test_a_journal_entry_debiting_an_unlisted_account_is_refused_whatever_else_it_does() -> None:
    restricted = caller(scopes.JOURNAL_WRITE, accounts=(MINE,))
    # The usual journal entry debits a system account, which no restriction lists.
    from_system = PostJournalEntry(
        request_id="r",
        lines=(
            JournalLine(account_id=SYSTEM, amount=EUR, side=Side.DEBIT),
            JournalLine(account_id=MINE, amount=EUR, side=Side.CREDIT),
        ),
    )
    assert_denied(authorize_command(restricted, from_system), account_id=SYSTEM)
    # A line without a side is not yet valid, but is counted as a debit, not waved through.
    no_side = PostJournalEntry(
        request_id="r",
        lines=(
            JournalLine(account_id=MINE, amount=EUR, side=Side.DEBIT),
            JournalLine(account_id=OTHER, amount=EUR, side=None),
        ),
    )
    assert_denied(authorize_command(restricted, no_side), account_id=OTHER)


def test_a_restricted_token_cannot_open_an_account_with_a_generated_id() -> None:
    restricted = caller(scopes.ACCOUNTS_WRITE, accounts=(MINE,))
    command = OpenAccount(request_id="r", account_id="", owner_name="A", currency="EUR")
    rejection = assert_denied(authorize_command(restricted, command), account_id="")
    assert "must name one of them to open" in rejection.message
    assert authorize_command(caller(scopes.ACCOUNTS_WRITE), command) is None


def test_an_account_is_recognized_in_any_spelling_of_its_uuid() -> None:
    restricted = caller(scopes.FUNDS_WRITE, accounts=(MINE.upper(),))
    for spelling in (MINE, MINE.upper(), MINE.replace("-", ""), f"{{{MINE}}}"):
        withdraw = Withdraw(request_id="r", account_id=spelling, amount=EUR)
        assert authorize_command(restricted, withdraw) is None, spelling
        assert authorize_read(restricted, spelling) is None, spelling


def test_a_refused_account_id_is_shown_bounded_and_printable() -> None:
    restricted = caller(scopes.FUNDS_WRITE, accounts=(MINE,))
    hostile = "x\n\x00" + "é" * 5000
    rejection = authorize_command(
        restricted, Withdraw(request_id="r", account_id=hostile, amount=EUR)
    )
    assert rejection is not None
    shown = rejection.metadata["account_id"]
    assert len(shown) == 64
    assert shown.startswith("x??é") and shown.endswith("…")
    assert shown in rejection.message


def test_an_unrestricted_token_reads_every_account_and_searches() -> None:
    reader = caller(scopes.LEDGER_READ)
    assert authorize_read(reader, OTHER) is None
    assert authorize_read(reader, "not-an-id") is None
    assert authorize_search(reader) is None


def test_a_restricted_token_reads_its_accounts_only_and_cannot_search() -> None:
    restricted = caller(scopes.LEDGER_READ, accounts=(MINE, OTHER))
    assert authorize_read(restricted, MINE) is None
    assert authorize_read(restricted, OTHER) is None
    rejection = assert_denied(authorize_read(restricted, SYSTEM), account_id=SYSTEM)
    assert (
        rejection.message
        == f"This token is restricted to some accounts and may not read account {SYSTEM}."
    )
    assert_denied(authorize_read(restricted, ""), account_id="")
    assert_denied(authorize_search(restricted), restriction="chronos_accounts")


def test_an_empty_restriction_allows_no_account() -> None:
    nothing = caller(scopes.ADMIN, accounts=())
    for command in commands_on(MINE).values():
        assert authorize_command(nothing, command) is not None
    assert authorize_read(nothing, MINE) is not None
    assert authorize_search(nothing) is not None


def test_reverse_entry_needs_journal_write_and_an_unrestricted_token() -> None:
    command = ReverseEntry(request_id="r", entry_id=OTHER, force=True)
    assert authorize_command(caller(scopes.JOURNAL_WRITE), command) is None
    assert_denied(
        authorize_command(caller(scopes.FUNDS_WRITE, scopes.ACCOUNTS_WRITE), command),
        required_scope=scopes.JOURNAL_WRITE,
    )
    rejection = assert_denied(
        authorize_command(caller(scopes.JOURNAL_WRITE, accounts=(MINE,)), command),
        restriction=scopes.ACCOUNTS_CLAIM,
    )
    assert "cannot reverse entries" in rejection.message
