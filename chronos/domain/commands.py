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


Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | TransferFunds
    | PostJournalEntry
    | FreezeAccount
    | UnfreezeAccount
    | CloseAccount
)
