"""Commands: requests to change the ledger, named in the imperative.

A command is built at the edge from a request and validated by
:func:`chronos.domain.validation.validate` before the ledger decides on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Side(enum.Enum):
    """A debit lowers an account's balance, a credit raises it."""

    DEBIT = "DEBIT"
    CREDIT = "CREDIT"


@dataclass(frozen=True, slots=True, kw_only=True)
class Money:
    currency: str
    minor_units: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAccount:
    request_id: str
    account_id: str
    owner_name: str
    currency: str
    overdraft_limit_minor: int = 0
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit:
    request_id: str
    account_id: str
    amount: Money
    description: str = ""
    # Caller-defined labels, stored on every line of the entry (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdraw:
    request_id: str
    account_id: str
    amount: Money
    description: str = ""
    # Caller-defined labels, stored on every line of the entry (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferFunds:
    request_id: str
    from_account_id: str
    to_account_id: str
    amount: Money
    description: str = ""
    # Caller-defined labels, stored on every line of the entry (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalLine:
    account_id: str
    amount: Money
    side: Side | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PostJournalEntry:
    request_id: str
    lines: tuple[JournalLine, ...] = field(default_factory=tuple)
    description: str = ""
    # Caller-defined labels, stored on every line of the entry (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class FreezeAccount:
    request_id: str
    account_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnfreezeAccount:
    request_id: str
    account_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseAccount:
    request_id: str
    account_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePendingTransfer:
    """Reserves ``amount`` on the from account for a later post or void (a hold)."""

    request_id: str
    from_account_id: str
    to_account_id: str
    amount: Money
    description: str = ""
    # 0: the hold never expires; otherwise the ledger voids it this long after it was placed.
    timeout_seconds: int = 0
    # Caller-defined labels: on the hold's lines, and kept by the hold (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PostPendingTransfer:
    """Moves a hold's money: all of it (``amount.minor_units`` 0), or part, releasing the
    rest. The hold's two accounts are not the client's to give: the server fills them in
    from the hold before deciding, so the accounts can be locked and authorized."""

    request_id: str
    pending_id: str
    amount: Money = Money(currency="", minor_units=0)
    from_account_id: str = ""
    to_account_id: str = ""
    # Caller-defined labels, on the lines this command writes (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class VoidPendingTransfer:
    """Releases a hold without moving money; accounts filled in as for a post."""

    request_id: str
    pending_id: str
    reason: str = ""
    from_account_id: str = ""
    to_account_id: str = ""
    # Caller-defined labels, on the lines this command writes (see movement_metadata).
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpirePendingTransfer:
    """The ledger's own void of a hold whose timeout passed (sent by the expiry job)."""

    request_id: str
    pending_id: str
    from_account_id: str
    to_account_id: str


HoldCommand = (
    CreatePendingTransfer | PostPendingTransfer | VoidPendingTransfer | ExpirePendingTransfer
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginalLine:
    """A line of the entry a :class:`ReverseEntry` names, as the event store holds it.

    ``kind`` is the ``EntryKind`` value of the entry ("TRANSFER", "REVERSAL", ...).
    """

    account_id: str
    side: Side
    currency: str
    amount_minor: int
    counterparty_account_id: str
    kind: str
    line_index: int
    reverses_entry_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReverseEntry:
    """Posts the mirror image of entry ``entry_id``.

    ``original`` is filled in by the command server from the event store after the
    request was validated and fingerprinted (the client sends only the entry id);
    empty when no such entry exists. The lines of a posted entry never change, so they
    may be read before the accounts are locked.
    """

    request_id: str
    entry_id: str
    reason: str = ""
    force: bool = False
    metadata: tuple[tuple[str, str], ...] = ()
    original: tuple[OriginalLine, ...] = ()


Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | TransferFunds
    | PostJournalEntry
    | FreezeAccount
    | UnfreezeAccount
    | CloseAccount
    | CreatePendingTransfer
    | PostPendingTransfer
    | VoidPendingTransfer
    | ExpirePendingTransfer
    | ReverseEntry
)
