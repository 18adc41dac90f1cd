"""Who may call what: the method → scope rules and the account restriction, as pure
functions of the caller and the request, answering a refusal or None.

Two checks, both before a request is validated, so a caller without the right learns
nothing about its request:

* :func:`authorize_call`, by method, for every call (``chronos.rpc.serving`` runs it
  first): the caller needs one of the method's scopes, or ``admin``. A method without a
  rule is refused to every caller, ``admin`` included, so a new RPC that was not given
  a rule cannot be called until it is.
* :func:`authorize_command` and :func:`authorize_read`, by request, in the servicers:
  inside ``ExecuteBatch`` each command needs its own scope, and a token restricted to
  some accounts (the ``chronos_accounts`` claim, ``Caller.accounts``) may only debit,
  change or read those. Receiving money is not restricted: the ``to`` of a transfer,
  and the credited lines of a journal entry, may be any account.

Methods are named by their protobuf full name, ``chronos.v1.CommandService.TransferFunds``
(``MethodDescriptor.full_name``), not the ``/chronos.v1.CommandService/TransferFunds``
path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from chronos.domain.commands import (
    CloseAccount,
    Command,
    CreatePendingTransfer,
    Deposit,
    ExpirePendingTransfer,
    FreezeAccount,
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
from chronos.domain.validation import canonical_account_id
from chronos.security.caller import Caller
from chronos.security.scopes import (
    ACCOUNTS_CLAIM,
    ACCOUNTS_WRITE,
    ADMIN,
    FUNDS_WRITE,
    JOURNAL_WRITE,
    LEDGER_READ,
)

COMMAND_SERVICE: Final = "chronos.v1.CommandService"
QUERY_SERVICE: Final = "chronos.v1.QueryService"

# The scope each command needs, alone or as an item of ExecuteBatch.
COMMAND_SCOPES: Final[Mapping[type[Command], str]] = {
    OpenAccount: ACCOUNTS_WRITE,
    FreezeAccount: ACCOUNTS_WRITE,
    UnfreezeAccount: ACCOUNTS_WRITE,
    CloseAccount: ACCOUNTS_WRITE,
    Deposit: FUNDS_WRITE,
    Withdraw: FUNDS_WRITE,
    TransferFunds: FUNDS_WRITE,
    PostJournalEntry: JOURNAL_WRITE,
    CreatePendingTransfer: FUNDS_WRITE,
    PostPendingTransfer: FUNDS_WRITE,
    VoidPendingTransfer: FUNDS_WRITE,
    # A correction of the books, like a journal entry; its force flag (waiving the
    # overdraft limit) needs nothing more than this scope.
    ReverseEntry: JOURNAL_WRITE,
}

# The scopes that let a caller into ExecuteBatch; each item is then checked alone.
WRITE_SCOPES: Final = frozenset({ACCOUNTS_WRITE, FUNDS_WRITE, JOURNAL_WRITE})

# Every method and the scopes of which the caller needs one (``admin`` always does).
# Spelled out rather than derived, since it is a public contract that a reader checks
# against docs/security.md; a unit test checks it covers both services' descriptors.
METHOD_SCOPES: Final[Mapping[str, frozenset[str]]] = {
    f"{COMMAND_SERVICE}.OpenAccount": frozenset({ACCOUNTS_WRITE}),
    f"{COMMAND_SERVICE}.FreezeAccount": frozenset({ACCOUNTS_WRITE}),
    f"{COMMAND_SERVICE}.UnfreezeAccount": frozenset({ACCOUNTS_WRITE}),
    f"{COMMAND_SERVICE}.CloseAccount": frozenset({ACCOUNTS_WRITE}),
    f"{COMMAND_SERVICE}.Deposit": frozenset({FUNDS_WRITE}),
    f"{COMMAND_SERVICE}.Withdraw": frozenset({FUNDS_WRITE}),
    f"{COMMAND_SERVICE}.TransferFunds": frozenset({FUNDS_WRITE}),
    f"{COMMAND_SERVICE}.PostJournalEntry": frozenset({JOURNAL_WRITE}),
    f"{COMMAND_SERVICE}.CreatePendingTransfer": frozenset({FUNDS_WRITE}),
    f"{COMMAND_SERVICE}.PostPendingTransfer": frozenset({FUNDS_WRITE}),
    f"{COMMAND_SERVICE}.VoidPendingTransfer": frozenset({FUNDS_WRITE}),
    f"{COMMAND_SERVICE}.ExecuteBatch": WRITE_SCOPES,
    f"{COMMAND_SERVICE}.ReverseEntry": frozenset({JOURNAL_WRITE}),
    f"{QUERY_SERVICE}.GetAccount": frozenset({LEDGER_READ}),
    f"{QUERY_SERVICE}.ListTransactions": frozenset({LEDGER_READ}),
    f"{QUERY_SERVICE}.GetBalanceAt": frozenset({LEDGER_READ}),
    f"{QUERY_SERVICE}.SearchAccounts": frozenset({LEDGER_READ}),
    f"{QUERY_SERVICE}.ListPendingTransfers": frozenset({LEDGER_READ}),
    f"{QUERY_SERVICE}.ListEvents": frozenset({LEDGER_READ}),
    f"{QUERY_SERVICE}.GetEntry": frozenset({LEDGER_READ}),
}

# How much of a refused account id a refusal repeats: the id comes from the request
# before validation, so it may be anything, of any length.
_SHOWN_ACCOUNT_ID_LENGTH_MAX = 64


@dataclass(frozen=True, slots=True)
class AccountUse:
    """An account a command acts on in a way an account restriction must allow.

    ``action`` is the verb a refusal uses: ``debit``, ``deposit into``, ``open``, ...
    """

    account_id: str
    action: str


def authorize_call(caller: Caller, method_full_name: str) -> Rejection | None:
    """The refusal of a call to ``method_full_name`` by ``caller``, or None if allowed.

    Args:
        caller: The authenticated caller.
        method_full_name: As ``chronos.v1.CommandService.TransferFunds``.
    """
    allowed = METHOD_SCOPES.get(method_full_name)
    if allowed is None:
        return Rejection(
            Reason.PERMISSION_DENIED,
            f"{method_full_name} has no authorization rule, so no token may call it.",
            metadata={"method": method_full_name},
        )
    if ADMIN in caller.scopes or caller.scopes & allowed:
        return None
    return missing_scope(method_full_name.rpartition(".")[2], allowed)


def authorize_command(caller: Caller, command: Command) -> Rejection | None:
    """The refusal of ``command`` (alone or as a batch item), or None if allowed: the
    caller needs the command's scope, and, if restricted to some accounts, every
    account :func:`account_uses` names must be one of them. Checks the unvalidated
    command, comparing account ids in their canonical form."""
    scope = COMMAND_SCOPES[type(command)]
    if ADMIN not in caller.scopes and scope not in caller.scopes:
        return missing_scope(type(command).__name__, frozenset({scope}))
    if caller.accounts is None:
        return None
    if isinstance(command, ReverseEntry):
        return _reversal_restricted()
    listed = _canonical_ids(caller.accounts)
    for use in account_uses(command):
        if _canonical(use.account_id) not in listed:
            return account_refused(use)
    return None


def authorize_read(caller: Caller, account_id: str) -> Rejection | None:
    """The refusal of reading ``account_id`` (GetAccount, ListTransactions,
    GetBalanceAt), or None; the scope was checked by :func:`authorize_call`."""
    if caller.accounts is None or _canonical(account_id) in _canonical_ids(caller.accounts):
        return None
    return account_refused(AccountUse(account_id, "read"))


def restricted_accounts(caller: Caller) -> frozenset[str] | None:
    """The accounts a restricted caller may read, in canonical form; None when the
    caller is not restricted (GetEntry shows such a caller only its accounts' part)."""
    if caller.accounts is None:
        return None
    return _canonical_ids(caller.accounts)


def authorize_search(caller: Caller) -> Rejection | None:
    """The refusal of SearchAccounts, or None: a token restricted to some accounts may
    not search, since a search reads accounts it does not name. (Filtering the hits to
    its accounts instead would make SearchAccounts a slower GetAccount.)"""
    if caller.accounts is None:
        return None
    return Rejection(
        Reason.PERMISSION_DENIED,
        "This token is restricted to some accounts, so it cannot search accounts; read "
        "its own accounts with GetAccount.",
        metadata={"restriction": ACCOUNTS_CLAIM},
    )


def account_uses(command: Command) -> tuple[AccountUse, ...]:
    """The accounts ``command`` debits or changes: what an account restriction must
    list. Money received is not restricted (the ``to`` of a transfer, a journal
    entry's credited lines); a journal line without a side counts as a debit."""
    match command:
        case Withdraw():
            return (AccountUse(command.account_id, "debit"),)
        case TransferFunds():
            return (AccountUse(command.from_account_id, "debit"),)
        case Deposit():
            return (AccountUse(command.account_id, "deposit into"),)
        case PostJournalEntry():
            return tuple(
                AccountUse(line.account_id, "debit")
                for line in command.lines
                if line.side is not Side.CREDIT
            )
        case OpenAccount():
            return (AccountUse(command.account_id, "open"),)
        case FreezeAccount():
            return (AccountUse(command.account_id, "freeze"),)
        case UnfreezeAccount():
            return (AccountUse(command.account_id, "unfreeze"),)
        case CloseAccount():
            return (AccountUse(command.account_id, "close"),)
        case CreatePendingTransfer():
            return (AccountUse(command.from_account_id, "place a hold on"),)
        # The hold's from account (filled in from the hold; "" when the hold is unknown,
        # which a restricted token is then refused, so it cannot probe pending ids).
        case PostPendingTransfer():
            return (AccountUse(command.from_account_id, "post a hold of"),)
        case VoidPendingTransfer():
            return (AccountUse(command.from_account_id, "void a hold of"),)
        case ExpirePendingTransfer():
            # Sent only by the ledger's own expiry job, never through an RPC.
            return ()
    raise AssertionError(f"no account rule for {type(command).__name__}")


def _reversal_restricted() -> Rejection:
    # The request names only an entry: its accounts are known once its lines are read,
    # and a reversal debits every account the entry credited (a deposit's account, a
    # transfer's receiver), which a restricted token could not debit itself.
    return Rejection(
        Reason.PERMISSION_DENIED,
        "This token is restricted to some accounts, so it cannot reverse entries; "
        "a reversal needs an unrestricted token with journal:write.",
        metadata={"restriction": ACCOUNTS_CLAIM},
    )


def missing_scope(method: str, allowed: frozenset[str]) -> Rejection:
    """The refusal of ``method`` to a token holding none of the ``allowed`` scopes."""
    names = sorted(allowed)
    if len(names) == 1:
        message = f"This token lacks the scope {names[0]}, which {method} needs."
    else:
        message = f"This token lacks a scope {method} needs: one of {', '.join(names)}, or {ADMIN}."
    return Rejection(
        Reason.PERMISSION_DENIED, message, metadata={"required_scope": " ".join(names)}
    )


def account_refused(use: AccountUse) -> Rejection:
    """The refusal of ``use`` to a token whose account restriction does not list it."""
    if not use.account_id:
        return Rejection(
            Reason.PERMISSION_DENIED,
            f"This token is restricted to some accounts, so it must name one of them to "
            f"{use.action}; the request names none.",
            metadata={"account_id": ""},
        )
    shown = _shown(use.account_id)
    return Rejection(
        Reason.PERMISSION_DENIED,
        f"This token is restricted to some accounts and may not {use.action} account {shown}.",
        metadata={"account_id": shown},
    )


def _canonical(account_id: str) -> str:
    # The ids are compared as the ledger will use them once validated, so that a
    # request spelling a listed account in capitals or without hyphens is the same
    # account; an id that is not a UUID stays as it is, and matches nothing listed.
    return canonical_account_id(account_id) or account_id


def _canonical_ids(account_ids: frozenset[str]) -> frozenset[str]:
    return frozenset(_canonical(account_id) for account_id in account_ids)


def _shown(account_id: str) -> str:
    canonical = canonical_account_id(account_id)
    if canonical is not None:
        return canonical
    text = "".join(c if c.isprintable() else "?" for c in account_id)
    if len(text) > _SHOWN_ACCOUNT_ID_LENGTH_MAX:
        text = text[: _SHOWN_ACCOUNT_ID_LENGTH_MAX - 1] + "…"
    return text
